"""Variants of lesson 3's coding exercise (see the comment above CODE_RUN in tests/test_exercises.py)."""

CODE = {
    "freeze_up_to": {
        "checker": "tlcourse.checkers.freezing:check_freeze_up_to",
        "function": "freeze_up_to",
        # Another correct way: by parameter name, then the slice of blocks in eval mode.
        "correct": '''
def freeze_up_to(model, block):
    for name, p in model.backbone.features.named_parameters():
        if int(name.split(".")[0]) < block:
            p.requires_grad_(False)
    model.backbone.features[:block].eval()
    return model
''',
        # The typical mistake: no gradients, but BatchNorm left in training mode.
        "wrong": '''
def freeze_up_to(model, block):
    for part in model.backbone.features[:block]:
        for p in part.parameters():
            p.requires_grad = False
    return model
''',
        "hint": "running mean",
        "stub": '''
def freeze_up_to(model, block):
    """Freeze blocks 0 .. block - 1 of model.backbone.features: no gradients, BatchNorm statistics fixed."""
    ...  # your code here
''',
    },
}
