ln -s a.txt link-to-file
ln -s real tree/rel-link
ln -s /etc/passwd tree/abs-link
