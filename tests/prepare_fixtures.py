"""Small raw dataset trees in every layout `grefel prepare` reads, generated for the tests.

Each ``make_*`` writes a tree under the given folder and returns what a correct reader must produce
(the expected written sources with label and split, and how many items are skipped). Images are
random noise unless a face is needed (JAFFE): then real photographs shipped in installed packages
(skimage's astronaut, matplotlib's grace_hopper) are used.
"""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

RNG = np.random.default_rng(1234)


def noise(h: int, w: int, channels: int = 3) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, channels) if channels > 1 else (h, w), dtype=np.uint8)


def jpeg_bytes(a: np.ndarray, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format=fmt)
    return buf.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def face_photos() -> list[np.ndarray]:
    """Two real RGB photographs with one face each (public domain / shipped with matplotlib)."""
    import matplotlib.cbook as cbook
    import skimage.data

    hopper = np.asarray(Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB"))
    return [skimage.data.astronaut(), hopper]


# -- RAF-DB -----------------------------------------------------------------------------------------
RAF_TRAIN = [1, 2, 3, 4, 5, 6]  # codes of train_00001.. (label = code - 1)
RAF_TEST = [7, 7, 1]


def make_rafdb(
    root: Path,
    *,
    aligned: str = "folder",
    original: bool = True,
    manual: bool = True,
    label_name: str = "list_patition_label.txt",
) -> dict:
    """RAF-DB basic tree. ``aligned``: "folder", "zip" or "none". Adds three bad label lines."""
    base = root / "basic"
    lines, expect = [], {}
    names = [(f"train_{i + 1:05d}", c, "train") for i, c in enumerate(RAF_TRAIN)] + [
        (f"test_{i + 1:04d}", c, "test") for i, c in enumerate(RAF_TEST)
    ]
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as z:
        for k, (stem, code, split) in enumerate(names):
            lines.append(f"{stem}.jpg {code}")
            if aligned == "folder":
                write(base / "Image" / "aligned" / f"{stem}_aligned.jpg", jpeg_bytes(noise(100, 100)))
            elif aligned == "zip":
                z.writestr(f"aligned/{stem}_aligned.jpg", jpeg_bytes(noise(100, 100)))
            if original:
                write(base / "Image" / "original" / f"{stem}.jpg", jpeg_bytes(noise(120, 160)))
            if manual:
                pts = np.array([[60, 50], [100, 50], [80, 70], [64, 92], [96, 92]], float) + k
                txt = "\n".join(f"{x:.2f}\t{y:.2f}" for x, y in pts) + f"\n{k % 3}\n{k % 3}\n{k % 5}\n"
                write(base / "Annotation" / "manual" / f"{stem}_manu_attri.txt", txt.encode())
            expect[stem] = (code - 1, split, {"gender": k % 3, "race": k % 3, "age": k % 5})
    if aligned == "zip":
        write(base / "Image" / "aligned.zip", zbuf.getvalue())
    lines += [
        "train_00099.jpg 4",
        "this line is malformed",
        "test_0004.jpg 9",
        "test_0003.jpg 9",
        "train_00002.jpg 2",
    ]  # missing image, malformed, unknown code, two duplicates
    # test_0003 has code 1 above: this line contradicts it (the first is kept); train_00002 repeats its line
    write(base / "EmoLabel" / label_name, ("\n".join(lines) + "\n").encode())
    return {"expect": expect, "skipped": 5}


def make_rafdb_repackaged(root: Path) -> dict:
    expect = {}
    for split, codes in (("train", RAF_TRAIN), ("test", RAF_TEST)):
        for i, code in enumerate(codes):
            p = write(
                root / "DATASET" / split / str(code) / f"{split}_{i:04d}_aligned.jpg", jpeg_bytes(noise(100, 100))
            )
            expect[p.relative_to(root).as_posix()] = (code - 1, split)
    write(root / "DATASET" / "train" / "9" / "odd.jpg", jpeg_bytes(noise(100, 100)))  # unknown code folder
    write(root / "train_labels.csv", b"image,label\n")
    return {"expect": expect, "skipped": 1}


# -- AffectNet --------------------------------------------------------------------------------------
AFFECTNET_HEADER = [
    "subDirectory_filePath",
    "face_x",
    "face_y",
    "face_width",
    "face_height",
    "facial_landmarks",
    "expression",
    "valence",
    "arousal",
]


def _landmarks68(w: int, h: int) -> np.ndarray:
    return np.column_stack([RNG.uniform(0.2 * w, 0.8 * w, 68), RNG.uniform(0.2 * h, 0.8 * h, 68)])


def make_affectnet_csv(root: Path) -> dict:
    """Original layout. training.csv (header) and validation.csv (no header) with the traps."""
    img_dir = root / "Manually_Annotated" / "Manually_Annotated_Images"
    lists = root / "Manually_Annotated_file_lists"
    rows_train, rows_val, expect = [], [], {}

    def row(name, code, w=160, h=120, box=(20, 10, 100, 100), fmt="JPEG", create=True, landmarks=True):
        if create:
            write(img_dir / name, jpeg_bytes(noise(h, w), fmt))
        lm = ";".join(f"{v:.2f}" for v in _landmarks68(w, h).reshape(-1)) if landmarks else "1;2;3"
        return [name, *map(str, box), lm, str(code), "0.1", "-0.2"]

    for i, code in enumerate([0, 1, 2, 7, 3, 6]):
        rows_train.append(row(f"{100 + i}/img{i}.jpg", code))
        expect[f"img{i}"] = (code, "train")
    rows_train.append(row("106/neg.jpg", 4, box=(10, 10, -5, 40)))  # negative width: fine for landmark alignment
    expect["neg"] = (4, "train")
    rows_train.append(row("107/png_named_jpg.jpg", 5, fmt="PNG"))  # wrong extension
    expect["png_named_jpg"] = (5, "train")
    for code in (8, 9, 10):  # never labels
        rows_train.append(row(f"108/drop{code}.jpg", code))
    rows_train.append(["109/short.jpg", "1", "2"])  # malformed row
    rows_train.append(row("110/missing.jpg", 1, create=False))  # file not found
    for i, code in enumerate([0, 7, 5]):
        rows_val.append(row(f"200/val{i}.jpg", code))
        expect[f"val{i}"] = (code, "test")
    lists.mkdir(parents=True)
    with open(lists / "training.csv", "w", newline="") as f:
        csv.writer(f).writerows([AFFECTNET_HEADER] + rows_train)
    with open(lists / "validation.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows_val)  # this copy has no header
    return {"expect": expect, "skipped8": 5, "contempt": {"img3", "val1"}}


def make_affectnet_npy(root: Path) -> dict:
    expect = {}
    for split_dir, split, codes in (("train_set", "train", [0, 1, 7, 8, 3]), ("val_set", "test", [6, 2])):
        for i, code in enumerate(codes):
            write(root / split_dir / "images" / f"{i}.jpg", jpeg_bytes(noise(224, 224)))
            ann = root / split_dir / "annotations"
            ann.mkdir(parents=True, exist_ok=True)
            np.save(ann / f"{i}_exp.npy", np.array(str(code)) if i == 1 else np.array(code))  # a string label too
            np.save(ann / f"{i}_lnd.npy", _landmarks68(224, 224).reshape(-1))
            if code != 8:
                expect[f"{split_dir}/images/{i}.jpg"] = (code, split)
    write(root / "train_set" / "images" / "99.jpg", jpeg_bytes(noise(224, 224)))  # no annotation
    return {"expect": expect, "skipped8": 2}


# -- FER+ ------------------------------------------------------------------------------------------
# (usage, image name, votes neutral..NF) -> expected label index or None
FERPLUS_ROWS = [
    ("Training", "fer0000000.png", [4, 0, 0, 1, 3, 2, 0, 0, 0, 0], None),  # 4 of 10 after outliers: no majority
    ("Training", "fer0000001.png", [6, 0, 0, 1, 3, 0, 0, 0, 0, 0], 0),  # 6 > 4.5 -> neutral (single vote removed)
    ("Training", "", [10, 0, 0, 0, 0, 0, 0, 0, 0, 0], None),  # empty image name: not a face
    ("Training", "fer0000003.png", [0, 0, 0, 0, 0, 0, 0, 0, 7, 3], None),  # unknown majority
    ("PublicTest", "fer0000004.png", [0, 9, 0, 0, 0, 0, 0, 0, 0, 1], 1),  # happiness (NF single vote removed)
    ("PublicTest", "fer0000005.png", [0, 0, 0, 0, 0, 0, 0, 0, 2, 8], None),  # not a face
    ("PrivateTest", "fer0000006.png", [1, 1, 0, 0, 0, 0, 0, 8, 0, 0], 7),  # contempt
    ("PrivateTest", "fer0000007.png", [5, 5, 0, 0, 0, 0, 0, 0, 0, 0], None),  # tie
    ("PrivateTest", "fer0000008.png", [0, 0, 2, 0, 0, 0, 0, 0, 0, 0], 2),  # surprise, 2 votes only
]


def make_ferplus(root: Path, icml: bool = False) -> dict:
    pix_name = "icml_face_data.csv" if icml else "fer2013.csv"
    cols = ["emotion", " Usage", " pixels"] if icml else ["emotion", "pixels", "Usage"]
    (root / "fer2013").mkdir(parents=True)
    (root / "FERPlus").mkdir(parents=True)
    with open(root / "fer2013" / pix_name, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for i, (usage, *_rest) in enumerate(FERPLUS_ROWS):
            pix = " ".join(map(str, noise(48, 48, 1).reshape(-1)))
            w.writerow([i % 7, usage, pix] if icml else [i % 7, pix, usage])
    with open(root / "FERPlus" / "fer2013new.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "Usage",
                "Image name",
                "neutral",
                "happiness",
                "surprise",
                "sadness",
                "anger",
                "disgust",
                "fear",
                "contempt",
                "unknown",
                "NF",
            ]
        )
        for usage, name, votes, _ in FERPLUS_ROWS:
            w.writerow([usage, name, *votes])
    split = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
    expect = {f"{pix_name}#{i}": (lab, split[u]) for i, (u, _, _, lab) in enumerate(FERPLUS_ROWS) if lab is not None}
    return {"expect": expect, "skipped": sum(lab is None for *_, lab in FERPLUS_ROWS)}


# -- FERG-DB ---------------------------------------------------------------------------------------
FERG_EXPRESSIONS = ["anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"]
FERG_CLASSES = ["anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"]


def make_ferg(root: Path, nested: bool = False, per: int = 2, chars=("aia", "ray")) -> dict:
    base = root / "FERG_DB_256" / ("FERG_DB_256" if nested else "")
    expect = {}
    for ch in chars:
        for ex in FERG_EXPRESSIONS:
            for n in range(1, per + 1):
                a = noise(64, 64, 4)
                a[..., 3] = 0
                a[16:48, 16:48, 3] = 255  # transparent background, opaque head
                p = write(base / ch / f"{ch}_{ex}" / f"{ch}_{ex}_{n}.png", jpeg_bytes(a, "PNG"))
                expect[p.relative_to(root).as_posix()] = (FERG_CLASSES.index("happiness" if ex == "joy" else ex), ch)
    write(base / ".DS_Store", b"\x00\x00\x00\x01Bud1")
    write(base / chars[0] / ".DS_Store", b"\x00\x00\x00\x01Bud1")
    return {"expect": expect, "skipped": 0}


# -- JAFFE -----------------------------------------------------------------------------------------
def jaffe_images() -> dict[str, Image.Image]:
    """256 x 256 grayscale faces named like JAFFE (one palette-mode), plus a blank one (no face)."""
    astro, hopper = face_photos()
    a = Image.fromarray(astro[20:276, 100:356]).convert("L")
    h = Image.fromarray(hopper[60:440, 70:450]).convert("L").resize((256, 256))
    return {
        "KA.AN1.39.tiff": a,
        "KA.HA2.40.tiff": h.convert("P"),
        "KL.NE1.1.tiff": h,
        "KM.SU1.5.tiff": Image.new("L", (256, 256), 128),
    }


def make_jaffe(root: Path, as_zip: bool = False) -> dict:
    images = jaffe_images()
    if as_zip:
        root.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(root / "jaffe.zip", "w") as z:
            z.writestr("jaffe/README_FIRST.txt", "terms of use")
            for name, im in images.items():
                buf = io.BytesIO()
                im.save(buf, format="TIFF")
                z.writestr(f"jaffe/{name}", buf.getvalue())
    else:
        for name, im in images.items():
            (root / "jaffe").mkdir(parents=True, exist_ok=True)
            im.save(root / "jaffe" / name, format="TIFF")
        write(root / "jaffe" / "README_FIRST.txt", b"terms of use")
    classes = ["AN", "DI", "FE", "HA", "NE", "SA", "SU"]
    expect = {n: (classes.index(n.split(".")[1][:2]), n[:2]) for n in images if not n.startswith("KM")}
    return {"expect": expect, "skipped": 2}  # README_FIRST.txt, blank image (no face)


# -- Aff-Wild2 -------------------------------------------------------------------------------------
ABAW3_HEADER = "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other"
ABAW2_HEADER = "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise"


def make_affwild2(root: Path, abaw3: bool = True) -> dict:
    ann = root / "annotations" / ("EXPR_Classification_Challenge" if abaw3 else "EXPR_Set")
    videos = {
        "Train_Set": {
            "10-60-1280x720": [0, 1, -1, 7 if abaw3 else 6, 4, 2],
            "video7_left": [5, 5],
            "video7_right": [3, "x"],
        },
        "Validation_Set": {"120-30-1280x720": [6, 0, 3]},
    }
    missing = {("10-60-1280x720", 6)}  # annotated frame without an image: no face was found
    expect, skipped = {}, 0
    for official, vids in videos.items():
        for vid, codes in vids.items():
            lines = [ABAW3_HEADER if abaw3 else ABAW2_HEADER] + [str(c) for c in codes]
            write(ann / official / f"{vid}.txt", ("\n".join(lines) + "\n").encode())
            for k, c in enumerate(codes, 1):
                if (vid, k) in missing:
                    skipped += 1
                    continue
                src = f"cropped_aligned/{vid}/{k:05d}.jpg"
                write(root / src, jpeg_bytes(noise(112, 112)))
                if c in (-1, "x"):
                    skipped += 1
                else:
                    group = vid.removesuffix("_left").removesuffix("_right")
                    expect[src] = (int(c), "train" if official == "Train_Set" else "test", group)
    return {"expect": expect, "skipped": skipped}
