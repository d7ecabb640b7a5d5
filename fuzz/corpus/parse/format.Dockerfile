# Comment
RUN echo 'we are running some # of cool things'
RUN echo hello \
# comment
world
        # this is a comment-line
    RUN echo hello
RUN echo world
RUN echo "\
     hello\
     world"
