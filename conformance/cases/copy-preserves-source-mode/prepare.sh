chmod 0600 private
