"""Variants of lesson 2's coding exercise (see the comment above CODE_RUN in tests/test_exercises.py)."""

CODE = {
    "classifier_for": {
        "checker": "tlcourse.checkers.heads:check_classifier",
        "function": "classifier_for",
        # Another correct way: a module of one's own, as VGGClassifier in the lesson.
        "correct": '''
import torch
import torchvision
from torch import nn

class ResNetClassifier(nn.Module):
    def __init__(self, n_classes, weights=None):
        super().__init__()
        resnet = torchvision.models.resnet18(weights=weights)
        self.backbone = nn.Sequential(*list(resnet.children())[:-1])  # everything up to the pooling
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(512, n_classes))

    def forward(self, x):
        return self.head(self.backbone(x))

def classifier_for(n_classes, weights=None):
    return ResNetClassifier(n_classes, weights)
''',
        # The typical mistake: a softmax at the end, so the model outputs probabilities.
        "wrong": '''
import torchvision
from torch import nn

def classifier_for(n_classes, weights=None):
    model = torchvision.models.resnet18(weights=weights)
    model.fc = nn.Sequential(nn.Linear(512, n_classes), nn.Softmax(dim=1))
    return model
''',
        "hint": "probabilities",
        "stub": '''
def classifier_for(n_classes, weights=None):
    """torchvision's ResNet18 with `weights`, its ImageNet classifier replaced by a head for n_classes."""
    ...  # your code here
''',
    },
}
