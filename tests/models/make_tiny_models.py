"""Make two tiny, randomly initialised models that vLLM can serve on a CPU.

Usage: python make_tiny_models.py OUTDIR [--force]

Writes OUTDIR/tiny-text (Qwen2) and OUTDIR/tiny-vision (BLIP-2 with an OPT
language model). Nothing is downloaded: the tokenizer is trained here on a few
sentences and the weights are random (seeded), so the text they generate is
nonsense, but loading, chat templates, batching, streaming and image input
all go through the real serving path. Run it with the engine venv's python.
"""

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SEED = 1234
STAMP = ".tiny-models-v1"
MODELS = ("tiny-text", "tiny-vision")
EOS, IM_START, IM_END, IMAGE = "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"
SPECIAL_TOKENS = [EOS, IM_START, IM_END, IMAGE]
NUM_QUERY_TOKENS = 8

# ChatML-style. Content is used as a plain string, so vLLM passes text-only
# content; BLIP-2 puts its 8 image tokens at the start of the prompt itself.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello! How are you today? I am fine, thank you.",
    "Inference servers answer chat completions over HTTP.",
    "A load balancer checks the health endpoint every few seconds.",
    "Describe the image: a red square on a white background.",
    "user: what is two plus two? assistant: two plus two is four.",
    "Tokens are streamed back one by one as server-sent events.",
    "Streaming responses end with a final data: [DONE] line.",
    "Metrics are exported in the Prometheus text format on port eight thousand.",
    "Please summarise this document in three short bullet points.",
    "0123456789 +-*/=()[]{}<>,.;:!?'\"@#$%&_ ~`|\\^",
]


# torch and transformers are imported in the functions below, so that the
# "already built" check in main() returns at once.


def make_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 20, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS,
        eos_token=IM_END,
        pad_token=EOS,
        unk_token=None,
        extra_special_tokens={"image_token": IMAGE},
        chat_template=CHAT_TEMPLATE,
        model_max_length=2048,
    )


def make_text(out: Path, tokenizer) -> None:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,  # head_dim 64; the CPU attention rejects 16
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(SEED)
    Qwen2ForCausalLM(config).to(torch.bfloat16).save_pretrained(out)
    tokenizer.save_pretrained(out)


def make_vision(out: Path, tokenizer) -> None:
    import torch
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        Blip2QFormerConfig,
        Blip2VisionConfig,
        BlipImageProcessor,
        OPTConfig,
    )

    text_config = OPTConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        word_embed_proj_dim=128,
        ffn_dim=256,
        num_hidden_layers=2,
        num_attention_heads=2,  # head_dim 64
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = Blip2Config(
        vision_config=Blip2VisionConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=56,
            patch_size=14,
        ),
        qformer_config=Blip2QFormerConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=1,
            num_attention_heads=2,
            cross_attention_frequency=1,
        ),
        text_config=text_config,
        num_query_tokens=NUM_QUERY_TOKENS,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE),
    )
    torch.manual_seed(SEED)
    Blip2ForConditionalGeneration(config).to(torch.bfloat16).save_pretrained(out)
    images = BlipImageProcessor(size={"height": 56, "width": 56})
    processor = Blip2Processor(images, tokenizer, num_query_tokens=NUM_QUERY_TOKENS)
    processor.chat_template = CHAT_TEMPLATE
    processor.save_pretrained(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--force", action="store_true", help="rebuild even if present")
    args = parser.parse_args()

    stamp = args.outdir / STAMP
    present = all((args.outdir / name / "config.json").exists() for name in MODELS)
    if stamp.exists() and present and not args.force:
        print(f"tiny models already in {args.outdir} (remove {stamp} or use --force)")
        return 0

    tokenizer = make_tokenizer()
    make_text(args.outdir / "tiny-text", tokenizer)
    make_vision(args.outdir / "tiny-vision", tokenizer)
    for path in (args.outdir / name for name in MODELS):
        for file in path.iterdir():  # save_pretrained writes the weights 0600
            file.chmod(0o644)
    stamp.write_text("tiny-text tiny-vision\n")
    print(f"wrote {args.outdir}/tiny-text and {args.outdir}/tiny-vision")
    return 0


if __name__ == "__main__":
    sys.exit(main())
