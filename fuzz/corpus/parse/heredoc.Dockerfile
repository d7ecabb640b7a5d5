# syntax=docker/dockerfile:1
FROM debian
RUN <<EOT bash
  set -ex
  apt-get update
  apt-get install -y vim
EOT
RUN <<EOT
  mkdir -p foo/bar
EOT
RUN <<EOT
#!/usr/bin/env python
print("hello world")
EOT
RUN <<FILE1 cat > file1 && <<FILE2 cat > file2
I am
first
FILE1
I am
second
FILE2
COPY <<EOF greeting.txt
hello world
EOF
ARG FOO=bar
COPY <<-EOT /script.sh
	  echo "hello ${FOO}"
	EOT
COPY <<-"EOT" /script2.sh
	echo "hello ${FOO}"
EOT
COPY --chmod=755 <<EOF1 <<EOF2 /dst/
one
EOF1
two
EOF2
RUN echo "<<NOTHEREDOC" && cat <<<herestring
RUN 3<<'X' cat /dev/fd/3
$NOT_EXPANDED
X
