mkdir empty with-empty with-empty/inner
chmod 0711 with-empty/inner
