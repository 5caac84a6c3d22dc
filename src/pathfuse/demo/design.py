"""The demo as a positive control: which latent factor drives which label, and who sees it.

The demo must show what fusion does on real data, where foundation models are complementary:
each sees part of what predicts a label, so combining their logits beats the best of them.
Random-weight encoders see nothing in particular, so the complementarity is built in on both
sides and documented here (and in ``docs/demo.md``, and in the ``README.md`` the generator
writes next to the demo's files):

* the image — every case has four latent factors (:data:`LATENT`) rendered as different
  image properties by :func:`pathfuse.demo.tissue.render_tissue`: stain ``hue`` moves
  red against blue absorbance and leaves the green channel alone; ``density`` fills the
  nuclear lattice and darkens nuclei (darker green and red); ``nucleus_scale`` changes the
  nuclear grain at constant nuclear area; ``tumour`` is the fraction of tissue in regions of
  large dark nuclei (a multiple-instance signal);
* the encoders (``demo_vit_*`` in ``resources/encoders.yaml``) — ``demo_vit_a`` divides red
  and blue by 1000 in its normalisation, so it sees the green channel only: density and
  tumour, and it is blind to hue; ``demo_vit_b`` sees the tile at 32 px (4 µm/px): colour
  and low frequencies, hue first; ``demo_vit_c`` sees 64 px in colour and mixes both;
* the labels — every label is a noisy mix in which hue and density carry comparable weight
  (:data:`CLASSIFICATION`, :data:`MUTATIONS`, :data:`SURVIVAL`), so the colour-blind expert
  and the colour experts each hold about half of the signal. Tile classes sit on a Latin
  square of (hue, density) levels (:func:`pathfuse.demo.tiles._class_prototype`).

Measured linear-probe R² per 256-px tile at the time of writing (240 tiles, ridge, 4-fold):
demo_vit_a hue −0.01, density 0.30; demo_vit_b hue 0.87, density 0.17, nucleus grain 0.39;
demo_vit_c hue 0.82, density 0.21.
"""

from __future__ import annotations

LATENT = ("hue", "nucleus_scale", "density", "tumour")

#: Weights of the latent factors (hue, nucleus_scale, density, tumour) behind each label.
CLASSIFICATION = {  # task: (weights, class proportions; None = equal)
    "brca_idc_ilc": ((0.8, 0.2, -1.0, 0.0), (0.6, 0.4)),
    "crc_tumor_normal": ((-0.7, 0.0, 0.8, 0.5), None),
    "bracs_7": ((0.8, 0.3, 1.0, 0.3), None),
    "panda_isup": ((-0.7, 0.3, 1.0, 0.3), None),
}
BRACS_3_FROM_7 = (0, 0, 0, 1, 1, 2, 2)  # N PB UDH → benign; FEA ADH → atypical; DCIS IC → malignant
MUTATIONS = {  # column: (weights, prevalence)
    "tp53_mut": ((1.0, 0.3, 0.9, 0.0), 0.40),
    "pik3ca_mut": ((-0.8, 0.0, 1.0, 0.2), 0.35),
    "pten_mut": ((0.8, -0.3, -1.0, 0.0), 0.30),
    "arid1a_mut": ((0.9, 0.4, 0.8, 0.0), 0.30),
    "nf1_mut": ((-0.9, 0.0, -0.8, 0.3), 0.35),
}
MUTATION_TASKS = ("mut_tp53", "mut_pik3ca", "mut_pten", "mut_arid1a", "mut_nf1")
SURVIVAL = {  # cohort suffix: weights of the risk score
    "brca": (0.8, 0.2, 0.9, 0.2), "crc": (-0.8, 0.0, 0.8, 0.4), "blca": (0.9, 0.0, -0.8, 0.2),
    "kirc": (-0.8, 0.3, -0.9, 0.0), "lusc": (0.8, 0.0, 0.9, 0.3), "gbmlgg": (-0.9, 0.2, 0.8, 0.2),
}

#: Which image property each factor shows as, and which demo encoder sees it.
FACTORS = {
    "hue": ("stain colour: red vs blue absorbance, green unchanged", "demo_vit_b, demo_vit_c (not demo_vit_a)"),
    "density": ("nuclear density and darkness: how dark the green and red are", "demo_vit_a best; b, c weakly"),
    "nucleus_scale": ("nuclear grain at constant nuclear area (texture only)", "weakly, mostly demo_vit_b"),
    "tumour": ("fraction of tissue in regions of large dark nuclei (some tiles only)", "weakly, all"),
}
ENCODERS = {
    "demo_vit_a": "green channel only (red and blue divided by 1000 in its normalisation), 64 px: colour-blind",
    "demo_vit_b": "32-px view of the 256-px tile (4 µm/px), colour: low frequencies and stain hue",
    "demo_vit_c": "64 px, colour, CLS + mean of patch tokens: a mix of both",
}


def _weights_row(name: str, weights: tuple[float, ...]) -> str:
    return f"| {name} | " + " | ".join(f"{w:+.1f}" for w in weights) + " |"


def readme(n_cases: int, n_slides: int, label_noise: float) -> str:
    """The ``README.md`` written next to the demo's files: what it is and why fusion should win."""
    lines = [
        "# The pathfuse demo cohort (synthetic)",
        "",
        f"{n_cases} synthetic patients ({n_slides} slides) and six synthetic tile datasets, written by",
        "`pathfuse demo-data` (`pathfuse.demo`). Nothing here is real tissue. The cohort is a",
        "**positive control** for fusion: the demo encoders are complementary by construction, so a",
        "logit-level fuser (LogitProd, stacking, mean of logits) should beat the validation-selected",
        "best single expert on most tasks. Design and measured results: `docs/demo.md` in the repository.",
        "",
        "## Latent factors and who sees them",
        "",
        "| factor | shows in the image as | seen by |",
        "|---|---|---|",
        *(f"| {k} | {v[0]} | {v[1]} |" for k, v in FACTORS.items()),
        "",
        "| encoder | what it sees |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in ENCODERS.items()),
        "",
        "## Labels",
        "",
        f"Each label is a unit-norm mix of the factors plus Gaussian noise (sd {label_noise}, signal sd 1),",
        "cut into classes by rank (classification, mutation) or used as a log-hazard (survival). Hue and",
        "density carry comparable weight everywhere, so no single expert sees the whole signal:",
        "",
        "| label | " + " | ".join(LATENT) + " |",
        "|---|" + "---|" * len(LATENT),
        *(_weights_row(t, w) for t, (w, _) in CLASSIFICATION.items()),
        *(_weights_row(c, w) for c, (w, _) in MUTATIONS.items()),
        *(_weights_row(f"surv_{c}", w) for c, w in SURVIVAL.items()),
        "",
        "Tile datasets: the classes of a dataset sit on a Latin square of (hue, density) levels, so the",
        "colour-blind encoder tells density levels apart, the colour encoders hue levels, and only both",
        "together name the class.",
        "",
        "## Files",
        "",
        "`slides/` pyramidal TIFFs, `labels/` label tables, `splits/` train/val/test CSVs (per patient),",
        "`tiles/` tile datasets, `truth/latent.csv` the hidden factors (no stage reads it), `demo.done`",
        "the manifest (settings and SHA-256 of every file).",
        "",
    ]
    return "\n".join(lines)
