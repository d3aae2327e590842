"""python -m local_hub --storage DIR [--port 8080]: serve a local Hub on 127.0.0.1 until interrupted."""

import argparse
import logging
import os

from .server import MAX_UPLOAD_BYTES, LocalHub


def main(argv=None):
    parser = argparse.ArgumentParser(description="Serve a Hugging Face Hub look-alike on 127.0.0.1.")
    parser.add_argument("--storage", required=True, help="folder for repositories and file contents (kept across runs)")
    parser.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (0 picks a free one)")
    parser.add_argument(
        "--max-upload-bytes", type=int, default=MAX_UPLOAD_BYTES, help="largest file accepted (default: 5 GiB)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # LOCAL_HUB_TOKEN keeps one token across restarts (scripts); otherwise each start prints a new random one.
    hub = LocalHub(args.storage, port=args.port, token=os.environ.get("LOCAL_HUB_TOKEN"), max_upload_bytes=args.max_upload_bytes)
    print(
        f"serving {args.storage} at {hub.endpoint}; writes need the token below. Use\n"
        f"  HF_ENDPOINT={hub.endpoint} HF_TOKEN={hub.token} HF_HUB_DISABLE_XET=1",
        flush=True,
    )
    try:
        hub.server.serve_forever()
    except KeyboardInterrupt:
        hub.stop()


if __name__ == "__main__":
    main()
