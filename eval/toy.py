"""A tiny BEIR-layout dataset with the quirks real ones have, for tests and demos.

30 documents on distinct topics, 6 test queries and 2 train queries, with:
ids of several shapes (numeric strings with leading zeros, an int in the JSON, spaces,
slashes, non-ASCII); a query whose id is also a document id and whose text is that
document's (ArguAna-style); a document with an empty title; one with ``null`` title and
empty text (must be skipped); a qrel naming a document missing from the corpus; a qrel
with a zero score; extra fields in corpus and queries.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

TOPICS = [
    ("Photosynthesis", "Plants convert sunlight, water and carbon dioxide into glucose and oxygen in their chloroplasts."),
    ("Volcanoes", "Magma rises through the crust and erupts as lava, ash and volcanic gas from a volcano."),
    ("Black holes", "A black hole is a region of spacetime where gravity is so strong that not even light escapes."),
    ("Coffee", "Coffee is brewed from roasted coffee beans and contains caffeine, a stimulant."),
    ("Chess openings", "The Sicilian Defence is a chess opening that begins with the moves e4 c5."),
    ("Honey bees", "Honey bees collect nectar from flowers and store honey in wax combs inside the hive."),
    ("Insulin", "Insulin is a hormone made by the pancreas that lowers blood glucose levels."),
    ("The Roman Empire", "The Roman Empire was ruled by emperors from Augustus until the fall of Rome in 476."),
    ("Tides", "Ocean tides are caused by the gravitational pull of the Moon and the Sun on the Earth."),
    ("Vaccines", "Vaccines train the immune system to recognise a pathogen by exposing it to an antigen."),
    ("Bread baking", "Yeast ferments sugars in the dough, producing carbon dioxide that makes bread rise."),
    ("Jazz", "Jazz music originated in New Orleans and is known for improvisation and swing rhythms."),
    ("Glaciers", "Glaciers are slow rivers of ice that carve valleys as they move downhill."),
    ("Antibiotics", "Penicillin was the first antibiotic, discovered by Alexander Fleming in 1928."),
    ("Solar panels", "Photovoltaic solar panels turn sunlight directly into electricity using silicon cells."),
    ("Sleep", "During deep sleep the brain consolidates memories and the body repairs tissue."),
    ("Earthquakes", "Earthquakes happen when tectonic plates slip along a fault and release seismic waves."),
    ("Tea", "Green tea and black tea both come from the leaves of the Camellia sinensis plant."),
    ("Neural networks", "Artificial neural networks learn by adjusting weights with backpropagation and gradient descent."),
    ("Whales", "The blue whale is the largest animal ever known and feeds on tiny krill."),
    ("", "Marathon runners train for months to run 42 kilometres, building endurance with long slow runs."),
    ("Cholesterol", "High LDL cholesterol in the blood raises the risk of heart disease and stroke."),
    ("Rainbows", "A rainbow forms when sunlight is refracted, reflected and dispersed inside raindrops."),
    ("Bicycles", "A bicycle chain transfers power from the pedals to the rear wheel through gears."),
    ("Malaria", "Malaria is a disease caused by Plasmodium parasites spread by the bites of mosquitoes."),
    ("Pyramids", "The Great Pyramid of Giza was built as a tomb for the pharaoh Khufu."),
    ("Recycling", "Recycling aluminium cans saves most of the energy needed to make new aluminium."),
    ("Octopus", "An octopus has eight arms, three hearts and can change the colour of its skin."),
    ("Chocolate", "Chocolate is made from fermented and roasted cacao beans mixed with sugar."),
]

# ids of several shapes; index 20 has the empty title; "empty-doc" is skipped
DOC_IDS = ["0001", "2", "doc 3", "d/4", "five", "6", "7-α", "8", "9", "10", "11", "12", "13", "14", "15",
           "16", "17", "18", "19", "20", "21", "22", "23", "24", "25", "26", "27", "28", "29"]


def toy_corpus() -> dict[Any, dict[str, Any]]:
    corpus: dict[Any, dict[str, Any]] = {}
    for doc_id, (title, text) in zip(DOC_IDS, TOPICS):
        corpus[doc_id] = {"title": title, "text": text, "metadata": {"source": "toy"}}
    corpus[30] = {"title": "Lighthouses", "text": "A lighthouse warns ships at night with a bright rotating lamp."}
    corpus["empty-doc"] = {"title": None, "text": ""}
    return corpus


def toy_queries() -> dict[str, Any]:
    return {
        "q1": {"text": "how do plants make oxygen from sunlight", "metadata": {"lang": "en"}},
        "q2": "what causes ocean tides",
        "q3": "who discovered penicillin",
        "14": TOPICS[13][0] + " " + TOPICS[13][1],  # ArguAna-style: query id == doc id, same text
        "q 5": "which insect makes honey",
        "30": "ships warning lamp at night",
        "t1": "why does bread rise",  # train split only
        "t2": "largest animal on earth",
    }


def toy_qrels() -> dict[str, dict[str, dict[str, int]]]:
    return {
        "test": {
            "q1": {"0001": 1, "missing-doc": 1},  # a qrel for a document not in the corpus
            "q2": {"9": 1},
            "q3": {"14": 1},
            "14": {"10": 1, "14": 1},  # its own document is judged relevant: ignored by BEIR's rule
            "q 5": {"6": 1, "7-α": 0},
            "30": {"30": 1, "missing-doc": 1},
        },
        "train": {"t1": {"11": 1}, "t2": {"20": 1}},
    }


def write_toy_beir(folder: str | Path) -> Path:
    """Write the toy dataset as a BEIR folder and return its path."""
    from xtrieve.eval.beir_data import write_beir

    return write_beir(folder, toy_corpus(), toy_queries(), toy_qrels())
