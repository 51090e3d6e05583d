"""gRPC servicers: thin adapters from requests to the modules of dataset_svc."""
