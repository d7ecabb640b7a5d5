FROM ubuntu
ENTRYPOINT ["top", "-b"]
CMD ["-c"]
ENTRYPOINT exec top -b
CMD -- --ignored-param1
EXPOSE 80/udp
EXPOSE 80 443 8000-8010/tcp
VOLUME ["/var/www", "/var/log/apache2", "/etc/apache2"]
VOLUME /var/log /var/db
USER patrick
USER 1000:1000
WORKDIR /a
WORKDIR b
WORKDIR $DIRPATH/$DIRNAME
STOPSIGNAL SIGKILL
STOPSIGNAL 9
HEALTHCHECK NONE
HEALTHCHECK --interval=5m --timeout=3s \
  CMD curl -f http://localhost/ || exit 1
HEALTHCHECK --start-period=1m30s --start-interval=500ms --retries=5 CMD ["/bin/check"]
SHELL ["powershell", "-command"]
SHELL ["/bin/bash", "-c"]
ONBUILD ADD . /app/src
ONBUILD RUN /usr/local/bin/python-build --dir /app/src
ONBUILD COPY --from=build /usr/bin/app /app
onbuild run echo lower case keywords
