"""Sample from the zoo's models served by Triton (`python -m zoo triton --out repo`), with the
sampling loops here on the client. Needs `pip install tritonclient[grpc] numpy` and a server:

    docker run --rm -p8000:8000 -p8001:8001 -p8002:8002 -v $PWD/repo:/models \\
        nvcr.io/nvidia/tritonserver:<yy.mm>-py3 tritonserver --model-repository=/models

    python examples/triton_client.py text --prompt "ROMEO:" --length 200
    python examples/triton_client.py images --labels 0,1,2 --out digits.npy

Text (`rnn_step`, `lstm_step`): Triton keeps each sequence's recurrent state (implicit state), so
every request sends only new characters: the prompt first (sequence_start), then one sampled
character a request, all under one sequence id. Images (`gan_generator`): one stateless request;
the client draws the noise.
"""

import argparse
import json

import numpy as np


def infer(client, model, inputs: dict, outputs: list, **sequence):
    from tritonclient.grpc import InferInput, InferRequestedOutput

    requests = []
    for name, array in inputs.items():
        item = InferInput(name, list(array.shape), {"float32": "FP32", "int32": "INT32", "int64": "INT64"}[array.dtype.name])
        item.set_data_from_numpy(array)
        requests.append(item)
    result = client.infer(model, requests, outputs=[InferRequestedOutput(n) for n in outputs], **sequence)
    return [result.as_numpy(n) for n in outputs]


def sample_text(client, vocabulary: str, prompt: str, length: int, temperature: float = 0.8, seed: int = 0,
                model: str = "rnn_step", sequence_id: int = 1) -> str:
    """`length` characters after `prompt` from a recurrent step model, one request each."""
    rng = np.random.default_rng(seed)
    index = {c: i for i, c in enumerate(vocabulary)}
    tokens = np.array([[index[c] for c in prompt]], np.int32)  # [batch 1, time]
    text = prompt
    for i in range(length + 1):
        (logits,) = infer(client, model, {"tokens": tokens}, ["logits"], sequence_id=sequence_id,
                          sequence_start=i == 0, sequence_end=i == length)
        if i == length:
            break
        z = logits[0, -1].astype(np.float64) / max(temperature, 1e-8)
        p = np.exp(z - z.max())
        token = int(np.argmax(logits[0, -1])) if temperature == 0 else int(rng.choice(len(p), p=p / p.sum()))
        text += vocabulary[token]
        tokens = np.array([[token]], np.int32)
    return text


def sample_images(client, labels, seed: int = 0, model: str = "gan_generator", z_size: int = 64) -> np.ndarray:
    """One generated image per label, [N, 28, 28, 1] in [-1, 1]."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((len(labels), z_size)).astype(np.float32)
    label = np.asarray(labels, np.int32).reshape(-1, 1)  # dims [1] per row in the config
    (images,) = infer(client, model, {"z": z, "label": label}, ["image"])
    return images


def main():
    import tritonclient.grpc as grpcclient

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("text", "images"))
    parser.add_argument("--url", default="localhost:8001")
    parser.add_argument("--manifest", default="exports/rnn/manifest.json", help="text: the vocabulary's source")
    parser.add_argument("--prompt", default="ROMEO:")
    parser.add_argument("--length", type=int, default=200)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--labels", default="0,1,2,3,4,5,6,7,8,9")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="images.npy")
    args = parser.parse_args()
    client = grpcclient.InferenceServerClient(args.url)
    if args.what == "text":
        vocabulary = json.load(open(args.manifest))["runtime"]["vocabulary"]
        print(sample_text(client, vocabulary, args.prompt, args.length, args.temperature, args.seed))
    else:
        images = sample_images(client, [int(x) for x in args.labels.split(",")], args.seed)
        np.save(args.out, images)
        print(f"wrote {args.out} {images.shape}")


if __name__ == "__main__":
    main()
