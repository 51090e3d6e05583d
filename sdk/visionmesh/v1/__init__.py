"""Generated Protobuf and gRPC stubs for the visionmesh.v1 contracts (``make proto``).

The ``*_pb2*.py`` files here are build outputs of ``protos/visionmesh/v1/*.proto``; edit
the .proto files and run ``make proto``, never the generated code.
"""
