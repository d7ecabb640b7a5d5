FROM alpine
ADD file1.txt file2.txt /usr/src/things/
ADD https://example.com/archive.zip /usr/src/things/
ADD *.png /dest/
ADD index.?s /dest/
ADD arr[[]0].txt /dest/
ADD --checksum=sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d https://mirrors.edge.kernel.org/pub/linux/kernel/Historic/linux-0.01.tar.gz /
ADD --unpack=true https://example.com/archive.tar.gz /download
ADD --unpack=false my-archive.tar.gz .
ADD --keep-git-dir=true https://github.com/moby/buildkit.git#v0.10.1 /buildkit
ADD ["with space.txt", "/dest dir/"]
COPY --from=build /myapp /usr/bin/
COPY --from=nginx:latest /etc/nginx/nginx.conf /nginx.conf
COPY --chmod=755 app.sh /app/
ARG MODE=440
COPY --chmod=$MODE . .
COPY --chmod=u=rwX,go=rX . /app/
COPY --chown=55:mygroup files* /somedir/
COPY --chown=myuser:mygroup --chmod=644 files* /somedir/
COPY --link /foo /bar
COPY --parents ./x/./y/*.txt /parents/
COPY --exclude=*.txt --exclude=*.md hom* /mydir/
WORKDIR /usr/src/app
COPY test.txt rel/
