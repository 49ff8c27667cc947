"""Variants of lesson 4's coding exercise (see the comment above CODE_RUN in tests/test_exercises.py)."""

CODE = {
    "layerwise_groups": {
        "checker": "tlcourse.checkers.groups:check_layerwise_groups",
        "function": "layerwise_groups",
        # Another correct way: one group per parameter, its rate from the block number in its name.
        "correct": '''
def layerwise_groups(model, head_lr, decay):
    n = len(model.backbone.features)
    groups = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            depth = 0 if name.startswith("head") else n - int(name.split(".")[2])
            groups.append({"params": [p], "lr": head_lr * decay ** depth})
    return groups
''',
        # The typical mistake: the rates run the wrong way (block 0 fastest).
        "wrong": '''
def layerwise_groups(model, head_lr, decay):
    groups = [{"params": [p for p in model.head.parameters() if p.requires_grad], "lr": head_lr}]
    for i, block in enumerate(model.backbone.features):
        params = [p for p in block.parameters() if p.requires_grad]
        if params:
            groups.append({"params": params, "lr": head_lr * decay ** (i + 1)})
    return groups
''',
        "hint": "wrong way",
        "stub": '''
def layerwise_groups(model, head_lr, decay):
    """Parameter groups: the head at head_lr, block i of model.backbone.features at head_lr * decay ** (n - i)."""
    ...  # your code here
''',
    },
}
