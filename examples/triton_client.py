"""Classify image files with a Refiner-ViT behind Triton Inference Server: send the encoded file, print the top-k.

Works with both ways refiner-edge puts a model behind Triton:
- `refiner-edge deploy triton ... -o REPO` + NVIDIA's tritonserver: the ensemble `refiner_ensemble` (the default
  here) decodes and preprocesses on the server, then runs the engine or graph;
- `refiner-edge serve --onnx F | --engine F`: the model `refiner_image`.

    python examples/triton_client.py photo.jpg --url 127.0.0.1:8001 --model refiner_image --topk 5
    python examples/triton_client.py photo.jpg --url 127.0.0.1:8000 --protocol http --labels REPO/refiner/labels.txt

Needs only numpy and tritonclient (pip install 'tritonclient[http,grpc]'); refiner-edge need not be installed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def top_k(logits: np.ndarray, k: int) -> list[tuple[int, float]]:
    z = logits.astype(np.float64) - logits.max()
    probs = np.exp(z) / np.exp(z).sum()
    order = np.argsort(-probs, kind="stable")[:k]
    return [(int(i), float(probs[i])) for i in order]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", type=Path, help="image files (JPEG, PNG, ...)")
    parser.add_argument("--url", default="127.0.0.1:8001", help="server address HOST:PORT (default: %(default)s)")
    parser.add_argument("--protocol", choices=("grpc", "http"), default="grpc", help="(default: %(default)s)")
    parser.add_argument("--model", default="refiner_ensemble", help="(default: %(default)s)")
    parser.add_argument("--output", default="logits", help="output tensor name (default: %(default)s)")
    parser.add_argument("--topk", type=int, default=5, help="(default: %(default)s)")
    parser.add_argument("--labels", type=Path, help="labels.txt, one class name a line (default: class indices)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default: %(default)s)")
    args = parser.parse_args(argv)

    if args.protocol == "grpc":
        import tritonclient.grpc as client_module
    else:
        import tritonclient.http as client_module
    from tritonclient.utils import InferenceServerException

    labels = args.labels.read_text(encoding="utf-8").splitlines() if args.labels else None
    client = client_module.InferenceServerClient(args.url)
    failed = 0
    try:
        # a repository for a fixed-batch graph (export --batch B) has max_batch_size 0 and takes exactly B images
        # a request, as [B]; otherwise a request is [batch, 1]. Here each image is one request (sent B times there).
        json_kw = {"as_json": True} if args.protocol == "grpc" else {}
        config = client.get_model_config(args.model, **json_kw)
        batched = int(config.get("config", config).get("max_batch_size", 0)) > 0
        fixed = 1 if batched else int(client.get_model_metadata(args.model, **json_kw)["inputs"][0]["shape"][0])
        for path in args.images:
            data = np.array([path.read_bytes()] * fixed, dtype=object)
            image = client_module.InferInput("image", [1, 1] if batched else [fixed], "BYTES")
            image.set_data_from_numpy(data[:, None] if batched else data)
            try:
                if args.protocol == "grpc":
                    result = client.infer(args.model, [image], client_timeout=args.timeout)
                else:
                    result = client.infer(args.model, [image])
            except InferenceServerException as e:
                print(f"error: {path}: {str(e).splitlines()[0]}", file=sys.stderr)
                failed += 1
                continue
            print(path)
            for rank, (index, prob) in enumerate(top_k(result.as_numpy(args.output)[0], args.topk), 1):
                name = labels[index] if labels and index < len(labels) else f"class {index}"
                print(f"  {rank}. {index:4d} {name:30s} {prob:.4f}")
    finally:
        client.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
