#!/usr/bin/env bash
# Regenerate the protobuf, gRPC and Connect code from proto/ into
# ROOT/paynow_service/gen (ROOT defaults to the repository). `make gen` writes the
# real tree; `make check-gen` writes a scratch ROOT and compares, so the committed
# generated code can never drift from proto/.
set -euo pipefail
root="${1:-.}"
py="${PYTHON:-.venv/bin/python}"
out="$root/paynow_service/gen"
mkdir -p "$out"
find "$out" -mindepth 1 \( -name '*_pb2*.py*' -o -name '*_connect.py' -o -name '__init__.py' \) -delete
# python, pyi and Connect stubs, as buf.gen.yaml says (its paths are relative to --output).
.venv/bin/buf generate --template buf.gen.yaml --output "$root"
# gRPC stubs: their generator is built into grpc_tools, with no protoc-gen-* binary buf could run.
mapfile -t protos < <(cd proto && find . -name '*.proto' -printf '%P\n' | sort)
"$py" -m grpc_tools.protoc -Iproto --grpc_python_out="$out" "${protos[@]}"
# grpc_tools writes absolute imports of the proto package ("from paynow.points.v1 import ...");
# point them into this package so the generated tree needs no sys.path changes.
find "$out" -name '*_pb2_grpc.py' -exec sed -i 's/^from paynow\./from paynow_service.gen.paynow./' {} +
# The topic schema ships inside the package (infra apply registers it on GCP).
mkdir -p "$root/paynow_service/schema"
cp proto/paynow/events/v1/payment_event.proto "$root/paynow_service/schema/payment_event.proto"
# A package marker in every generated folder (the generators write none).
find "$out" -type d -exec sh -c 'printf "# Generated package marker. DO NOT EDIT.\n" > "$1/__init__.py"' _ {} \;
