#!/bin/sh
# Installs the project (editable, as `make setup` does) with the extras in $1, generates the
# gRPC stubs as `make proto` does, and byte-compiles. Runs inside deploy/docker/Dockerfile.
set -eu
extras="$1"
# grpcio-tools comes in the same resolve as the runtime, so the stubs match its protobuf.
pip install -e ".[${extras}]" grpcio-tools
rm -f sdk/visionmesh/v1/*_pb2*.py sdk/visionmesh/v1/*_pb2*.pyi
python -m grpc_tools.protoc -I protos -I third_party/googleapis \
    --python_out=sdk --pyi_out=sdk --grpc_python_out=sdk protos/visionmesh/v1/*.proto
touch sdk/visionmesh/v1/.generated
pip uninstall -y grpcio-tools
python -m compileall -q sdk dataset_svc gateway trainers deploy/docker
