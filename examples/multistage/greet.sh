#!/bin/sh
echo "$1 from a multi-stage skiff build"
