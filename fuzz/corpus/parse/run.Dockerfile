FROM debian
RUN ["/bin/bash", "-c", "echo hello"]
RUN [ "echo", "$HOME" ]
RUN ["c:\windows\system32\tasklist.exe"]
RUN source $HOME/.bashrc && \
echo $HOME
RUN --mount=type=cache,target=/root/.cache/go-build \
  go build ...
RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \
  --mount=type=cache,target=/var/lib/apt,sharing=locked \
  apt-get update && apt-get --no-install-recommends install -y gcc
RUN --mount=type=secret,id=aws,target=/root/.aws/credentials \
  aws s3 cp s3://... ...
RUN --mount=type=secret,id=API_KEY,env=API_KEY \
    some-command --token-from-env $API_KEY
RUN --mount=type=bind,source=src,target=/src,rw --mount=type=tmpfs,target=/tmp,size=64m true
RUN --network=none pip install --find-links wheels mypackage
RUN --security=insecure cat /proc/self/status | grep CapEff
RUN echo don't panic on an unbalanced quote
RUN -- echo --notaflag
