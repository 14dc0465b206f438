mkdir -p src/inner
printf 'one\n' > src/one.txt
printf 'two\n' > src/inner/two.txt
printf '#!/bin/sh\n' > src/inner/run.sh
ln -s inner/two.txt src/link
chmod 0640 src/one.txt
chmod 0755 src/inner/run.sh
chmod 0750 src/inner
tar --numeric-owner --owner=0 --group=0 -C src -cJf archive.tar.xz one.txt inner link
printf 'only named like an archive\n' > not-an-archive.tar.xz
rm -rf src
