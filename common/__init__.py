"""What every service needs and nothing more: settings base, logging, the error table, the
gRPC server bootstrap and client channels."""
