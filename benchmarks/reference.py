"""The two baselines the benchmark compares the course against, written the way their sources write them.

* :func:`tutorial_train_model`: the training loop of the official PyTorch
  transfer-learning tutorial ("ConvNet as fixed feature extractor",
  https://pytorch.org/tutorials/beginner/transfer_learning_tutorial.html):
  train and val phases per epoch, the whole model run on every image in every
  epoch (so the frozen backbone is recomputed every epoch), running loss and
  corrects, best weights kept by validation accuracy.
* :class:`OriginalDataset`, :class:`OriginalSquareCrop`, :class:`OriginalImageToTensor`
  and :func:`original_epoch`: the original course notebook's pipeline, copied
  from ``shared/original/transfer-learning-notebook.txt`` (PIL -> numpy / 255
  -> ``torch.Tensor``, transforms on ``(image, label)`` tuples, a random crop,
  and a matplotlib redraw of the figure after every batch), with only what is
  needed to run it: it reads a table instead of a CSV path, the figure is
  drawn on the Agg canvas (no ``%matplotlib notebook`` in a script), and the
  per-batch ``print`` goes to a buffer.

Both run on the course's model (MobileNetV2 with a frozen backbone and the
course's head) so that only the loop and the pipeline differ from the course's.
"""

from __future__ import annotations

import contextlib
import copy
import io
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn


# --------------------------------------------------------------------------- the tutorial's loop
def tutorial_train_model(model: nn.Module, dataloaders: dict, dataset_sizes: dict, criterion, optimizer,
                         num_epochs: int = 25, time_budget: float | None = None) -> tuple[nn.Module, list[dict]]:
    """The tutorial's ``train_model``, minus its printing and its LR scheduler.

    Differences, all to make it comparable with the course's recipe: the
    optimizer is passed in (the benchmark gives both the same AdamW), there is
    no ``StepLR`` (the course has none), and the per-epoch numbers are
    returned instead of printed. With ``time_budget`` (seconds) it stops after
    the epoch past which another one would not fit (for a busy machine; the
    benchmark then says how many epochs ran). The model is the course's frozen model, whose
    ``train()`` keeps the frozen backbone's BatchNorm in eval mode (in the
    tutorial's own model, ``model.train()`` would put it in batch-statistics mode).
    """
    best_model_wts = copy.deepcopy(model.state_dict())
    best_acc = 0.0
    records = []
    since = time.perf_counter()
    for epoch in range(num_epochs):
        if time_budget is not None and records:
            per_epoch = (time.perf_counter() - since) / len(records)
            if time.perf_counter() - since + per_epoch > time_budget:
                break
        record = {"epoch": epoch}
        epoch_start = time.perf_counter()
        for phase in ["train", "val"]:
            if phase == "train":
                model.train()  # Set model to training mode
            else:
                model.eval()  # Set model to evaluate mode
            running_loss = 0.0
            running_corrects = 0
            # Iterate over data.
            for inputs, labels in dataloaders[phase]:
                # zero the parameter gradients
                optimizer.zero_grad()
                # forward
                # track history if only in train
                with torch.set_grad_enabled(phase == "train"):
                    outputs = model(inputs)
                    _, preds = torch.max(outputs, 1)
                    loss = criterion(outputs, labels)
                    # backward + optimize only if in training phase
                    if phase == "train":
                        loss.backward()
                        optimizer.step()
                # statistics
                running_loss += loss.item() * inputs.size(0)
                running_corrects += torch.sum(preds == labels.data)
            epoch_loss = running_loss / dataset_sizes[phase]
            epoch_acc = running_corrects.double() / dataset_sizes[phase]
            record[f"{phase}_loss"], record[f"{phase}_acc"] = epoch_loss, float(epoch_acc)
            # deep copy the model
            if phase == "val" and epoch_acc > best_acc:
                best_acc = epoch_acc
                best_model_wts = copy.deepcopy(model.state_dict())
        record["seconds"] = time.perf_counter() - epoch_start
        records.append(record)
    # load best model weights
    model.load_state_dict(best_model_wts)
    return model, records


@torch.no_grad()
def tutorial_accuracy(model: nn.Module, loader) -> float:
    """Test accuracy the tutorial's way: eval mode, whole model on every image."""
    model.eval()
    correct = total = 0
    for inputs, labels in loader:
        _, preds = torch.max(model(inputs), 1)
        correct += int(torch.sum(preds == labels))
        total += len(labels)
    return correct / total


# --------------------------------------------------------------------------- the original notebook's pipeline
class OriginalDataset:
    """The original ``ClassificationDataset`` (reading a table, not a CSV file)."""

    def __init__(self, table, transform=None):
        self.csv = table.reset_index(drop=True)
        self.transform = transform

    def __len__(self):
        return len(self.csv)

    def __getitem__(self, idx):
        filepath, label = self.csv["file_path"][idx], self.csv["label"][idx]
        img = Image.open(filepath).convert("RGB")  # open with PIL and convert to rgb
        if self.transform:
            img, label = self.transform((img, label))  # apply transforms
        return img, label


class OriginalSquareCrop:
    """The original ``SquareCrop``, unchanged (including its width/height mix-up and random crop)."""

    def __init__(self, output_size):
        assert isinstance(output_size, (int))
        self.output_size = output_size

    def __call__(self, sample):
        image, label = sample
        h, w = image.size
        if h > w:
            new_w = self.output_size
            scale = new_w / w
            new_h = scale * h
        elif w > h:
            new_h = self.output_size
            scale = new_h / h
            new_w = scale * w
        else:
            new_h, new_w = self.output_size, self.output_size
        new_h, new_w = int(new_h), int(new_w)
        image = image.resize((new_h, new_w))
        crop_start_w = np.random.randint((new_w - self.output_size) + 1)
        crop_start_h = np.random.randint((new_h - self.output_size) + 1)
        image = image.crop((crop_start_h, crop_start_w, crop_start_h + self.output_size,
                            crop_start_w + self.output_size))
        return image, label


class OriginalImageToTensor:
    """The original ``ImageToTensor``: numpy float64 / 255, transposed, copied into a ``torch.Tensor``."""

    def __call__(self, sample):
        image, label = sample
        image = np.array(image) / 255
        image = image.transpose((2, 0, 1))
        return torch.Tensor(image), label


def original_epoch(model: nn.Module, loader, optimizer, id_to_classname: dict) -> int:
    """One epoch of the original ``train()`` loop's training part, per-batch redraw included.

    As in the original, every batch adds another ``imshow`` to the photo axes
    and redraws the whole figure; ``fig.canvas.draw()`` renders on Agg here.
    Returns the number of images seen.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.close("all")
    model.train()
    fig = plt.figure(figsize=(10, 5))
    ax = fig.add_subplot(121)
    ax2 = fig.add_subplot(122)
    ax.set_xlabel("Epoch")
    ax.set_ylabel("Cost")
    ax2.axis("off")
    img_label_text = ax2.text(0, -5, "", fontsize=15)
    bcosts, seen = [], 0
    with contextlib.redirect_stdout(io.StringIO()):
        for i, (x, y) in enumerate(loader):
            h = model(x)
            cost = F.cross_entropy(h, y, reduction="sum")
            optimizer.zero_grad()
            cost.backward()
            optimizer.step()
            bcosts.append(cost.item() / loader.batch_size)
            y_ind = 0
            im = np.array(x[y_ind]).transpose(1, 2, 0)
            predicted_class = id_to_classname[h.max(1)[1][y_ind].item()]
            ax2.imshow(im)
            img_label_text.set_text("Predicted class: " + predicted_class)
            fig.canvas.draw()
            print(f"example {i}\tLoss: {cost.item()}")
            seen += len(y)
    plt.close(fig)
    return seen
