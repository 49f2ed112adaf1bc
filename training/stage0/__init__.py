"""Stage-0 library code: the toy world's own "pretrained" backbones (vision encoder, tokenizer, small LM).

`views` turns scenes into the views LLaVA-NeXT sees (a downscaled base view plus full-resolution tiles)
with per-patch ground truth; `captions` and `text` make and encode per-view captions with hard negatives;
`vision` trains the encoder; `probe` checks what its frozen features carry; `language` trains the LM.
"""
