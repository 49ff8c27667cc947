#!/usr/bin/env python
"""Field test of the frozen recipe with and without cached augmented views. Prints one line per part.

    python benchmarks/field_views.py [K]      # K augmented views per training photo (default 4)

Trains the same linear head (AdamW 1e-3, weight decay 0.01, dropout 0.2, 10 epochs, seed 0) on the
clean features only, then on the clean features plus K cached views (one of the K+1 drawn per photo per
epoch), and reports balanced accuracy and recall per class with 95 % Wilson intervals on validation,
the test split and the field test (TLCOURSE_FIELD_TEST, read by tlcourse.fieldtest: evaluation only,
nothing is chosen on it here). Timings depend on what else the machine is doing.
"""
import os
import sys
import time

import torch

from tlcourse.models import build_model
from tlcourse.data import load_course_data
from tlcourse.features import features_for_files
from tlcourse.augcache import augmented_features
from tlcourse.config import get_config
from tlcourse.evaluation import prediction_scores
from tlcourse.fieldtest import load_field_test
K = int(sys.argv[1]) if len(sys.argv) > 1 else 4
config = get_config()
cache = config.feature_cache
torch.manual_seed(0)
model = build_model(2, weights="DEFAULT", offline=config.offline).eval()
data = load_course_data(config.data_dir, model.transform_settings, seed=0)
def feats(table):
    return features_for_files(model, list(table["file_path"]), list(table["label"]), cache_dir=cache).features, torch.tensor(table["label"].to_numpy())
tr, ytr = feats(data.part("train")); va, yva = feats(data.part("val")); te, yte = feats(data.part("test"))
field = load_field_test(data.classes, config.field_test_dir)
if field is None:
    sys.exit("This benchmark needs the field test (TLCOURSE_FIELD_TEST).")
fi, yfi = feats(field)
t0 = time.perf_counter()
aug = augmented_features(model, list(data.part("train")["file_path"]), ytr, views=K, cache_dir=cache, verbose=True)
print(f"K={K} views: {aug.n_computed} computed in {time.perf_counter()-t0:.0f} s (load average {os.getloadavg()[0]:.1f})", flush=True)
allviews = torch.cat([tr.unsqueeze(1), aug.features], 1)  # view 0 = clean
def train(views, epochs=10, seed=0):
    g = torch.Generator().manual_seed(seed); torch.manual_seed(seed)
    head = torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Linear(tr.shape[1], 2))
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=0.01)
    for _ in range(epochs):
        head.train()
        pick = torch.randint(views.shape[1], (len(views),), generator=g)
        x = views[torch.arange(len(views)), pick]
        for idx in torch.randperm(len(x), generator=g).split(32):
            opt.zero_grad(); torch.nn.functional.cross_entropy(head(x[idx]), ytr[idx]).backward(); opt.step()
    return head.eval()
for name, views in [("clean only", tr.unsqueeze(1)), (f"clean + {K} views", allviews)]:
    head = train(views)
    with torch.no_grad():
        for part, x, y in [("val", va, yva), ("test", te, yte), ("field", fi, yfi)]:
            p = head(x).argmax(1).numpy()
            s = prediction_scores(y.numpy(), p, data.classes)
            r = s.recall
            print(f"{name:18s} {part:5s} balanced {s.balanced_accuracy:.3f} " + "; ".join(
                f"{c} {int(r.at[c,'correct'])}/{int(r.at[c,'n'])} [{r.at[c,'low']:.2f}, {r.at[c,'high']:.2f}]" for c in data.classes), flush=True)
