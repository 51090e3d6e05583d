"""visionmesh SDK: the shared package every visionmesh process imports.

Sub-packages: ``visionmesh.v1`` (generated Protobuf/gRPC stubs), ``visionmesh.formats``
(DICE/COCO/YOLO/ImageFolder readers and writers), ``visionmesh.compat`` (compatibility
rules), ``visionmesh.store`` (object store), ``visionmesh.auth`` (JWT helpers),
``visionmesh.server`` (gRPC server bootstrap), ``visionmesh.cli`` (the ``vmesh`` CLI).
"""

__version__ = "0.1.0"
