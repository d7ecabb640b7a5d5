# syntax=docker/dockerfile:1
#  ESCAPE = `

FROM microsoft/nanoserver
COPY testfile.txt c:\
RUN dir c:\
# escape=\
RUN echo a `
  b
