mkdir -p src/inner
printf 'one\n' > src/one.txt
printf 'two\n' > src/inner/two.txt
chmod 0640 src/one.txt
tar --numeric-owner --owner=0 --group=0 -C src -cf archive.tar one.txt inner
tar --numeric-owner --owner=0 --group=0 -C src -czf archive.tar.gz one.txt inner
rm -rf src
