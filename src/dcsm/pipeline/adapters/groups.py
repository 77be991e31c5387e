r"""The classes of PASCAL VOC and COCO with an ImageNet-1k model: groups of ImageNet classes.

The paper explains a VOC classifier (20 classes, multi-label). An ImageNet-1k classifier names
finer classes: a dog is one of 118 breeds, a bus a school bus, a trolleybus or a minibus. A
**label set** (``"voc"``, ``"coco"``) maps each class of the data set to the group of ImageNet
classes it covers, and :func:`grouped_adapter` turns an ImageNet adapter into one whose classes
are the data set's, so that ``--labels voc --classes bus,car`` and candidates by threshold work
with the offline ImageNet models.

**Which ImageNet classes a group holds.** A group is the ImageNet-1k classes whose WordNet synset
(the ids in the tables below, ``n...``) is the data set class's synset or one of its hyponyms,
adjusted where the data set defines its class otherwise (PASCAL VOC's annotation guidelines:
"bus" excludes trams, "train" includes carriages, "car" excludes emergency vehicles, "cat" and
"dog" are domestic, "motorbike" includes mopeds and scooters, "bicycle" tricycles and unicycles,
"tvmonitor" is a standalone screen, not a laptop's). A part synset (wing, paddlewheel) is left
out, except where it is the only way ImageNet names the class (COCO's toilet: ``toilet seat``);
each deviation is noted in the table. No ImageNet class is in two groups of one label set
(``tests/pipeline/adapters/test_groups.py``), so the group probabilities add up to at most 1.

**The group's score map.** At each location :math:`x` of the base model's class score map
:math:`z(x)`, the group :math:`G`'s score is the log-sum-exp of its members' logits,

.. math::

    s_G(x) = \log \sum_{m \in G} e^{z_m(x)},

the log of the group's summed unnormalised probabilities: for a softmax model the group's
probability at :math:`x` is :math:`e^{s_G(x) - \mathrm{lse}_{all}(x)} = \sum_{m \in G} p_m(x)`, the
sum of its members' probabilities. Its derivative (autograd's, exact) is the members' derivatives
weighted by their share of the group, :math:`\nabla s_G = \sum_{m} p(m \mid G)\, \nabla z_m`: the
map of "dog" is the map of the breeds the model sees, each as much as it believes it. A
one-class group's map is that class's.

**Its probability.** The image-level probability of a group is the sum of its members'
probabilities as the base model gives them: :math:`P_G = \sum_{m \in G} \mathrm{softmax}(\bar
z)_m` with :math:`\bar z` the base adapter's pooled logits (mean over locations for the ImageNet
models: the classifier's own output). For the rules that read the map per location (``any_scale``,
``score_map`` in :mod:`dcsm.pipeline.candidates`) the probability at a location is the sum of the
members' probabilities there. For a sigmoid (multi-label) base model the members are independent
yes/no scores and a group is present when any member is: :math:`P_G = 1 - \prod_m (1 -
\sigma(z_m))`. These values are exact, not a function of the group maps alone (the pooling of a
log-sum-exp is not the log-sum-exp of the pooled logits), so the grouped model's score map carries
the base model's logits after the group maps (:class:`GroupedScoreMap`): channels ``0 .. G-1`` are
the groups' score maps, the ones that are explained; channels ``G .. G+999`` are the base logits,
read by :meth:`GroupedAdapter.pool` and :meth:`GroupedAdapter.probabilities` only.

**What ImageNet cannot name.** ``person``: ImageNet-1k has no class for a person as such. Its
person synsets (``scuba diver``, ``groom``, ``ballplayer``) name a role in one kind of scene
(under water, at a wedding, on a baseball field); a group of them would find those scenes, not
people, so ``person`` is in neither label set, and naming it is an error that says so. COCO has 17
more classes without an ImageNet-1k class (:data:`LABEL_SETS`, ``unnameable``; COCO's "kite" is
the toy, ImageNet's the bird). Groups of one ImageNet class are only as good as that class:
VOC's cow (``ox``), horse (``sorrel``), diningtable (``dining table``), pottedplant
(``pot, flowerpot``) and sofa (``studio couch``).

Example::

    adapter = dcsm.load_model("efficientnet_lite0", labels="voc")
    adapter.class_names  # ['aeroplane', 'bicycle', 'bird', ..., 'tvmonitor'] (19, no person)
    dcsm.DistinctSaliency(adapter).explain("photo.jpg", classes=["bus", "car"])
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from dcsm.errors import DcsmError
from dcsm.pipeline.adapters.base import LayerRef, ModelAdapter
from dcsm.pipeline.adapters.imagenet import imagenet_class_names

#: ImageNet-1k's class count: the only base model a label set fits.
IMAGENET_CLASSES = 1000

_PERSON = ("ImageNet-1k has no class for a person: its person synsets (scuba diver, groom, "
           "ballplayer) name a role in one kind of scene, not a person")


def _span(first: int, last: int) -> tuple[int, ...]:
    return tuple(range(first, last + 1))


# Each group: ImageNet-1k indices, with the classes' names and WordNet ids in the comment.
_BICYCLE = (444, 671, 870, 880)
# 444 bicycle-built-for-two n02835271, 671 mountain bike n03792782; VOC's bicycle includes
# tricycles and unicycles: 870 tricycle n04482393, 880 unicycle n04509417
_BIRD = _span(7, 24) + _span(80, 100) + _span(127, 146)
# every bird of ImageNet-1k (59): 7 cock n01514668 .. 24 great grey owl n01622779, 80 black
# grouse n01795545 .. 100 black swan n01860187, 127 white stork n02002556 .. 146 albatross
# n02058221
_BOAT = (403, 472, 484, 510, 554, 576, 625, 628, 724, 780, 814, 833, 871, 913, 914)
# WordNet's "vessel, watercraft" (VOC: ships, rowing boats, pedaloes):
# 403 aircraft carrier n02687172, 472 canoe n02951358, 484 catamaran n02981792,
# 510 container ship n03095699, 554 fireboat n03344393, 576 gondola n03447447,
# 625 lifeboat n03662601, 628 liner n03673027, 724 pirate n03947888, 780 schooner n04147183,
# 814 speedboat n04273569, 833 submarine n04347754, 871 trimaran n04483307,
# 913 wreck n04606251, 914 yawl n04612504; out: 694 paddlewheel (a part), 408 amphibian (a
# motor vehicle), 693 paddle
_BOTTLE = (440, 720, 737, 898, 907)
# 440 beer bottle n02823428, 720 pill bottle n03937543, 737 pop bottle n03983396,
# 898 water bottle n04557648, 907 wine bottle n04591713; out: 899 water jug and 901 whiskey
# jug (jugs), 711 perfume (the essence)
_BUS = (654, 779, 874)
# 654 minibus n03769881, 779 school bus n04146614, 874 trolleybus n04487081; out (VOC: no
# trams): 829 streetcar
_CAR = (436, 468, 511, 609, 627, 656, 661, 751, 817)
# WordNet's "car, auto": 436 beach wagon n02814533, 468 cab n02930766,
# 511 convertible n03100240, 609 jeep n03594945, 627 limousine n03670208,
# 656 minivan n03770679, 661 Model T n03777568, 751 racer n04037443,
# 817 sports car n04285008; out: 407 ambulance (VOC excludes
# emergency vehicles), 734 police van, 675 moving van and 717 pickup (trucks), 573 go-kart,
# 575 golfcart, 757 recreational vehicle; 705 passenger car is a railway car (train)
_CAT = _span(281, 285)
# domestic cats: 281 tabby n02123045, 282 tiger cat n02123159, 283 Persian cat n02123394,
# 284 Siamese cat n02123597, 285 Egyptian cat n02124075; out: the big and wild cats 286-293
# (cougar .. cheetah: VOC's cats are domestic), 383 Madagascar cat (a lemur)
_CHAIR = (423, 559, 765, 857)
# 423 barber chair n02791124, 559 folding chair n03376595, 765 rocking chair n04099969,
# 857 throne n04429376; out: 703 park bench (a bench), 831 studio couch (sofa)
_COW = (345,)
# 345 ox n02403003, ImageNet's only cattle; out: 346 water buffalo, 347 bison (other bovines)
_DININGTABLE = (532,)
# 532 dining table n03201208; out: 526 desk, 736 pool table (VOC: tables for eating at)
_DOG = _span(151, 268)
# the 118 domestic dogs: 151 Chihuahua n02085620 .. 268 Mexican hairless n02113978; out: the
# wild canines 269-280 (wolves, coyote, dingo, dhole, African hunting dog, hyena, foxes)
_HORSE = (339,)
# 339 sorrel n02389026, ImageNet's only horse; out: 340 zebra, 603 horse cart (the cart)
_MOTORBIKE = (665, 670)
# 665 moped n03785016; 670 motor scooter n03791053 (WordNet: a wheeled vehicle; VOC's motorbike
# includes scooters)
_PLANE = (404, 895)
# 404 airliner n02690373, 895 warplane n04552348; out: 908 wing (a part), 405 airship,
# 812 space shuttle
_POTTEDPLANT = (738,)
# 738 pot n03991062 ("pot, flowerpot: a container in which plants are cultivated"); out:
# 883 vase (VOC: flowers in vases are not potted plants), the flowers 985, 986
_SHEEP = (348, 349)
# 348 ram n02412080, 349 bighorn n02415577 (a wild sheep); out: 350 ibex (VOC: not goats)
_SOFA = (831,)
# 831 studio couch n04344873, ImageNet's only sofa
_TRAIN = (466, 547, 565, 705, 820)
# 466 bullet train n02917067, 547 electric locomotive n03272562, 565 freight car n03393912,
# 705 passenger car n03895866, 820 steam locomotive n04310018 (VOC: trains with their
# carriages); out (VOC: no trams): 829 streetcar
_TV = (664, 782, 851)
# 664 monitor n03782006, 782 screen n04152593, 851 television n04404412; out: 620 laptop
# (VOC: standalone screens only), 527 desktop computer, 598 home theater

_COCO_GROUPS: dict[str, tuple[int, ...]] = {
    "bicycle": _BICYCLE, "car": _CAR, "motorcycle": _MOTORBIKE, "airplane": _PLANE,
    "bus": _BUS, "train": _TRAIN,
    "truck": (555, 569, 675, 717, 734, 864, 867),
    # WordNet's "truck, motortruck" (vans included): 555 fire engine n03345487,
    # 569 garbage truck n03417042, 675 moving van n03796401, 717 pickup n03930630,
    # 734 police van n03977966, 864 tow truck n04461696, 867 trailer truck n04467665
    "boat": _BOAT,
    "traffic light": (920,),  # 920 traffic light n06874185
    "parking meter": (704,),  # 704 parking meter n03891332
    "bench": (703,),  # 703 park bench n03891251
    "bird": _BIRD, "cat": _CAT, "dog": _DOG, "horse": _HORSE, "sheep": _SHEEP, "cow": _COW,
    "elephant": (101, 385, 386),
    # 385 Indian elephant n02504013, 386 African elephant n02504458; 101 tusker n01871265
    # ("any mammal with prominent tusks, especially an elephant": ImageNet's are elephants)
    "bear": (294, 295, 296, 297, 388),
    # 294 brown bear n02132136, 295 American black bear n02133161, 296 ice bear n02134084,
    # 297 sloth bear n02134418; 388 giant panda n02510455 (WordNet 3.0 files it elsewhere, its
    # lemmas include "panda bear", and it is a bear)
    "zebra": (340,),  # 340 zebra n02391049
    "backpack": (414,),  # 414 backpack n02769748
    "umbrella": (879,),  # 879 umbrella n04507155
    "handbag": (748,),  # 748 purse n04026417
    "tie": (451, 457, 906),
    # 451 bolo tie n02865351, 457 bow tie n02883205, 906 Windsor tie n04591157
    "skis": (795,),  # 795 ski n04228054
    "sports ball": (429, 430, 522, 574, 722, 768, 805, 852, 890),
    # 429 baseball n02799071, 430 basketball n02802426, 522 croquet ball n03134739,
    # 574 golf ball n03445777, 722 ping-pong ball n03942813, 768 rugby ball n04118538,
    # 805 soccer ball n04254680, 852 tennis ball n04409515, 890 volleyball n04540053
    "tennis racket": (752,),  # 752 racket n04039381
    "bottle": _BOTTLE,
    "wine glass": (572,),  # 572 goblet n03443371 ("a drinking glass with a base and stem")
    "cup": (504, 968),
    # 504 coffee mug n03063599, 968 cup n07930864 (WordNet's definition is a punch; ImageNet's
    # photos are cups)
    "knife": (499,),  # 499 cleaver n03041632; out: 623 letter opener (a paper knife)
    "spoon": (618, 910),  # 618 ladle n03633091, 910 wooden spoon n04597913
    "bowl": (659, 809),  # 659 mixing bowl n03775546, 809 soup bowl n04263257
    "banana": (954,),  # 954 banana n07753592
    "apple": (948,),  # 948 Granny Smith n07742313; out: 956 custard apple (another fruit)
    "sandwich": (933,),  # 933 cheeseburger n07697313 (a hamburger, a sandwich)
    "orange": (950,),  # 950 orange n07747607
    "broccoli": (937,),  # 937 broccoli n07714990
    "hot dog": (934,),  # 934 hotdog n07697537
    "pizza": (963,),  # 963 pizza n07873807
    "chair": _CHAIR,
    "couch": _SOFA,
    "potted plant": _POTTEDPLANT,
    "bed": (431, 516, 520, 564),
    # 431 bassinet n02804414, 516 cradle n03125729, 520 crib n03131574,
    # 564 four-poster n03388549
    "dining table": _DININGTABLE,
    "toilet": (861,),  # 861 toilet seat n04447861, a part: ImageNet's only toilet
    "tv": _TV,
    "laptop": (620, 681),  # 620 laptop n03642806, 681 notebook n03832673 (a notebook computer)
    "mouse": (673,),  # 673 mouse n03793489 (the computer mouse)
    "remote": (761,),  # 761 remote control n04074963
    "keyboard": (508,),  # 508 computer keyboard n03085013; out: 878 typewriter keyboard
    "cell phone": (487,),  # 487 cellular telephone n02992529
    "microwave": (651,),  # 651 microwave n03761084
    "oven": (827,),
    # 827 stove n04330267 (a kitchen range holds the oven; weak: WordNet's stove is any heating
    # apparatus); out: 544 Dutch oven (a pot), 766 rotisserie
    "toaster": (859,),  # 859 toaster n04442312
    "sink": (896,),  # 896 washbasin n04553703
    "refrigerator": (760,),  # 760 refrigerator n04070727
    "book": (921,),  # 921 book jacket n07248320 (a book's dust cover; weak)
    "clock": (409, 530, 892),
    # 409 analog clock n02708093, 530 digital clock n03196217, 892 wall clock n04548280
    "vase": (883,),  # 883 vase n04522168
    "teddy bear": (850,),  # 850 teddy n04399382
    "hair drier": (589,),  # 589 hand blower n03483316 ("hair dryer, hair drier")
}

#: COCO's 80 classes in COCO's order (category ids 1..90 without the gaps).
COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)

#: PASCAL VOC's 20 classes in VOC's order.
VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)

_NO_CLASS = "ImageNet-1k has no such class"
_COCO_UNNAMEABLE: dict[str, str] = {
    "person": _PERSON,
    "fire hydrant": _NO_CLASS,
    "stop sign": _NO_CLASS + " (its street sign is any sign)",
    "giraffe": _NO_CLASS,
    "suitcase": _NO_CLASS,
    "frisbee": _NO_CLASS,
    "snowboard": _NO_CLASS,
    "kite": _NO_CLASS + " (ImageNet's kite, class 21, is the bird)",
    "baseball bat": _NO_CLASS,
    "baseball glove": _NO_CLASS,
    "skateboard": _NO_CLASS,
    "surfboard": _NO_CLASS,
    "fork": _NO_CLASS,
    "carrot": _NO_CLASS,
    "donut": _NO_CLASS,
    "cake": _NO_CLASS,
    "scissors": _NO_CLASS,
    "toothbrush": _NO_CLASS,
}


@dataclass(frozen=True)
class LabelSet:
    """A data set's classes as groups of ImageNet-1k classes.

    Attributes:
        name: the key (``"voc"``, ``"coco"``).
        title: the data set, for messages.
        groups: class name -> ImageNet-1k indices, in the data set's class order.
        unnameable: the data set's classes no ImageNet class names, each with the reason.
    """

    name: str
    title: str
    groups: Mapping[str, tuple[int, ...]]
    unnameable: Mapping[str, str]

    @property
    def class_names(self) -> list[str]:
        """The nameable classes, in the data set's order."""
        return list(self.groups)


def _ordered(order: Sequence[str], groups: Mapping[str, tuple[int, ...]],
             unnameable: Mapping[str, str]) -> dict[str, tuple[int, ...]]:
    assert set(groups).isdisjoint(unnameable) and set(groups) | set(unnameable) == set(order)
    return {name: groups[name] for name in order if name in groups}


_VOC_GROUPS = {
    "aeroplane": _PLANE, "bicycle": _BICYCLE, "bird": _BIRD, "boat": _BOAT, "bottle": _BOTTLE,
    "bus": _BUS, "car": _CAR, "cat": _CAT, "chair": _CHAIR, "cow": _COW,
    "diningtable": _DININGTABLE, "dog": _DOG, "horse": _HORSE, "motorbike": _MOTORBIKE,
    "pottedplant": _POTTEDPLANT, "sheep": _SHEEP, "sofa": _SOFA, "train": _TRAIN,
    "tvmonitor": _TV,
}

#: The label sets :func:`grouped_adapter` knows, by name.
LABEL_SETS: dict[str, LabelSet] = {
    "voc": LabelSet("voc", "PASCAL VOC", _ordered(VOC_CLASSES, _VOC_GROUPS, {"person": _PERSON}),
                    {"person": _PERSON}),
    "coco": LabelSet("coco", "COCO", _ordered(COCO_CLASSES, _COCO_GROUPS, _COCO_UNNAMEABLE),
                     _COCO_UNNAMEABLE),
}
#: The value of ``labels`` that keeps a model's own classes.
OWN_LABELS = "imagenet"


def label_set(name: str) -> LabelSet:
    """The label set called ``name``; DcsmError listing the known ones otherwise."""
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in LABEL_SETS:
        raise DcsmError(f"unknown label set '{name}'; known: "
                        + ", ".join([OWN_LABELS, *LABEL_SETS]))
    return LABEL_SETS[key]


def describe(labels: str) -> list[tuple[str, str]]:
    """(class, its ImageNet members in a few words) per class of a label set, then one row per
    unnameable class: what ``dcsm models --labels`` prints."""
    chosen = label_set(labels)
    names = imagenet_class_names()
    rows = []
    for cls, members in chosen.groups.items():
        shown = ", ".join(names[i] for i in members[:4])
        more = f", ... ({len(members)} classes)" if len(members) > 4 else ""
        rows.append((cls, shown + more))
    rows.extend((cls, f"not nameable: {why}") for cls, why in chosen.unnameable.items())
    return rows


class GroupedScoreMap(nn.Module):
    """The base model's score map followed by the groups' log-sum-exp.

    ``forward(x)`` returns ``(N, G + 1000, h, w)`` (or ``(N, G + 1000)`` for a model that
    returns logits): the G group score maps :math:`s_G = \\log\\sum_{m \\in G} e^{z_m}`, then
    the base model's 1000 class score maps :math:`z`, which the grouped adapter's probabilities
    read. The base model is the submodule ``net``.
    """

    def __init__(self, net: nn.Module, groups: Sequence[Sequence[int]]) -> None:
        super().__init__()
        self.net = net
        for i, members in enumerate(groups):
            self.register_buffer(f"members{i}", torch.tensor(list(members), dtype=torch.long),
                                 persistent=False)
        self.groups = len(groups)

    def members(self, i: int) -> torch.Tensor:
        """Group i's ImageNet indices (a long tensor on the model's device)."""
        out = getattr(self, f"members{i}")
        assert isinstance(out, torch.Tensor)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Group score maps, then the base score map, along dimension 1."""
        z = self.net(x)
        if not isinstance(z, torch.Tensor) or z.ndim not in (2, 4) or \
                z.shape[1] != IMAGENET_CLASSES:
            got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise DcsmError(f"a label set needs {IMAGENET_CLASSES} ImageNet class scores, the "
                            f"model returned {got}")
        grouped = [torch.logsumexp(z.index_select(1, self.members(i).to(z.device)), dim=1,
                                   keepdim=True) for i in range(self.groups)]
        return torch.cat([*grouped, z], dim=1)


class GroupedAdapter(ModelAdapter):
    """An ImageNet-1k adapter whose classes are a label set's groups (:func:`grouped_adapter`).

    Everything but the classes is the base adapter's: the name (so presets find their layers),
    layers and aliases, preprocessing, pooling, Grad-CAM's layer. Layers are named as for the
    base model; the base model is ``net`` inside the grouped one.

    The score map has :attr:`score_channels` = G + 1000 channels (:class:`GroupedScoreMap`);
    :meth:`pool` returns the groups' image-level **log** probabilities ``(N, G)`` and
    :meth:`probabilities` their probabilities (module docstring).

    Attributes:
        base: the ImageNet adapter.
        labels: the label set.
    """

    base: ModelAdapter
    labels: LabelSet

    def __init__(self, base: ModelAdapter, labels: LabelSet) -> None:
        paths = {name: f"net.{path}" for name, path in base.layer_aliases.items()}
        layouts = dict(base.layer_layouts)
        for key, spec in base.layer_layouts.items():
            if key not in base.layer_aliases:
                with contextlib.suppress(DcsmError):  # a key that names no layer: kept as is
                    layouts.setdefault(f"net.{base.layer_path(key)}", spec)
        super().__init__(
            name=base.name,
            model=GroupedScoreMap(base.model, list(labels.groups.values())),
            class_names=labels.class_names,
            preprocess=base.preprocess,
            default_layers=list(base.default_layers),
            layer_aliases=paths,
            multilabel=base.multilabel,
            pooling=base.pooling,
            min_input=base.min_input,
            gradcam_layer=base.gradcam_layer,
            description=f"{base.description}; classes: {labels.title}'s as groups of ImageNet "
                        "classes",
            input_size=base.input_size,
            layer_layouts=layouts,
            default_layout=base.default_layout,
        )
        self.base = base
        self.labels = labels

    @property
    def score_channels(self) -> int:
        """The groups' score maps, then the base model's 1000."""
        return self.num_classes + IMAGENET_CLASSES

    # ----------------------------------------------------------------- layers
    def layer_path(self, name: LayerRef) -> str:
        """A layer named as for the base model (alias, its module path), or by its path in
        the grouped model, or a module."""
        if isinstance(name, str):
            try:
                return f"net.{self.base.layer_path(name)}"
            except DcsmError:
                pass
        return super().layer_path(name)

    # ----------------------------------------------------------------- scores
    def group_log_probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """``(..., G)`` log probabilities of the groups from the base model's ``(..., 1000)``
        logits: the log of the summed member probabilities (softmax), or of the probability
        that any member is present (sigmoid, members independent)."""
        z = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
        if self.multilabel:
            absent = torch.nn.functional.logsigmoid(-z)  # log(1 - sigmoid(z))
            out = [torch.log(-torch.expm1(absent.index_select(-1, self._members(i, z))
                                          .sum(dim=-1)))
                   for i in range(self.num_classes)]
        else:
            logp = torch.log_softmax(z, dim=-1)
            out = [torch.logsumexp(logp.index_select(-1, self._members(i, z)), dim=-1)
                   for i in range(self.num_classes)]
        return torch.stack(out, dim=-1)

    def _members(self, i: int, like: torch.Tensor) -> torch.Tensor:
        grouped = self.model
        assert isinstance(grouped, GroupedScoreMap)
        return grouped.members(i).to(like.device)

    def pool(self, score_map: torch.Tensor) -> torch.Tensor:
        """``(N, G)`` image-level log probabilities of the groups from the ``(N, G + 1000, h,
        w)`` score map: the base adapter pools the base logits, then
        :meth:`group_log_probabilities`."""
        self._check_channels(score_map, 1)
        return self.group_log_probabilities(self.base.pool(score_map[:, self.num_classes:]))

    def probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        """The groups' probabilities ``(..., G)`` from either :meth:`pool`'s log probabilities
        ``(..., G)`` or score map values with their channels last ``(..., G + 1000)`` (one
        location's: the sum of the members' probabilities there)."""
        if scores.shape[-1] == self.score_channels:
            return self.group_log_probabilities(scores[..., self.num_classes:]).exp()
        if scores.shape[-1] == self.num_classes:
            return scores.exp().clamp(max=1.0)
        raise DcsmError(f"the grouped model {self.name} ({self.labels.name}) reads its pooled "
                        f"scores ({self.num_classes}) or its score map values "
                        f"({self.score_channels}), got {scores.shape[-1]} per item")

    def _check_channels(self, score_map: torch.Tensor, dim: int) -> None:
        if score_map.shape[dim] != self.score_channels:
            raise DcsmError(f"the grouped model {self.name} ({self.labels.name}) has a score map "
                            f"of {self.score_channels} channels, got {score_map.shape[dim]}")

    def class_index(self, key: str | int) -> int:
        """As for any adapter; a class of the data set ImageNet cannot name, or a name not in
        the label set, is an error that says so."""
        try:
            return super().class_index(key)
        except DcsmError:
            if not isinstance(key, str) or key.strip().lstrip("-").isdigit():
                raise
            wanted = key.strip().lower()
            for cls, why in self.labels.unnameable.items():
                if cls == wanted:
                    raise DcsmError(f"class '{cls}' of {self.labels.title} cannot be explained "
                                    f"with an ImageNet model: {why}; --labels "
                                    f"{self.labels.name} has {self.num_classes} classes") from None
            raise DcsmError(f"unknown class '{key}' for model {self.name} with --labels "
                            f"{self.labels.name}; its classes: "
                            + ", ".join(self.class_names)) from None


def grouped_adapter(adapter: ModelAdapter, labels: str) -> ModelAdapter:
    """``adapter`` (an ImageNet-1k classifier) with the classes of the label set ``labels``
    (``"voc"``, ``"coco"``; ``"imagenet"`` returns it as it is).

    The new adapter shares the model's weights. An adapter already grouped by another label set
    is regrouped from its base. DcsmError for an unknown label set or a model without
    ImageNet-1k's 1000 classes.
    """
    if isinstance(labels, str) and labels.strip().lower() == OWN_LABELS:
        return adapter.base if isinstance(adapter, GroupedAdapter) else adapter
    chosen = label_set(labels)
    if isinstance(adapter, GroupedAdapter):
        if adapter.labels.name == chosen.name:
            return adapter
        adapter = adapter.base
    if adapter.num_classes != IMAGENET_CLASSES:
        raise DcsmError(f"--labels {chosen.name} groups ImageNet-1k's {IMAGENET_CLASSES} "
                        f"classes; model {adapter.name} has {adapter.num_classes}")
    return GroupedAdapter(adapter, chosen)


__all__ = ["COCO_CLASSES", "LABEL_SETS", "OWN_LABELS", "VOC_CLASSES", "GroupedAdapter",
           "GroupedScoreMap", "LabelSet", "describe", "grouped_adapter", "label_set"]
