"""python -m local_hub --storage DIR [--port 8080]: serve a local Hub until interrupted."""

import argparse
import logging

from .server import LocalHub


def main(argv=None):
    parser = argparse.ArgumentParser(description="Serve a Hugging Face Hub look-alike on 127.0.0.1.")
    parser.add_argument("--storage", required=True, help="folder for repositories and file contents (kept across runs)")
    parser.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (0 picks a free one)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    hub = LocalHub(args.storage, port=args.port)
    print(f"serving {args.storage} at {hub.endpoint}; use HF_ENDPOINT={hub.endpoint} HF_TOKEN=local HF_HUB_DISABLE_XET=1")
    try:
        hub.server.serve_forever()
    except KeyboardInterrupt:
        hub.stop()


if __name__ == "__main__":
    main()
