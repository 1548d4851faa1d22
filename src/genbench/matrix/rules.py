"""The rules that turn measurements into the matrix's words, as data: :mod:`genbench.matrix.table` applies
the scales and limits below, and :func:`rules_text` renders the same objects as the prose printed under
every matrix, so the words and their explanation cannot drift apart.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Scale:
    """Words for a number: the first step whose limit the value meets (``value <= limit``, or
    ``value >= limit`` when ``at_least``), else ``last``."""

    steps: tuple[tuple[float, str], ...]
    last: str
    at_least: bool = False

    def word(self, value: float) -> str:
        meets = (lambda limit: value >= limit) if self.at_least else (lambda limit: value <= limit)
        return next((word for limit, word in self.steps if meets(limit)), self.last)

    def prose(self, var: str) -> str:
        sign = ">=" if self.at_least else "<="
        steps = [f"{var} {sign} {limit:g} {word}" if i == 0 else f"{sign} {limit:g} {word}"
                 for i, (limit, word) in enumerate(self.steps)]
        return ", ".join(steps) + f", else {self.last}"


QUALITY = Scale(((1.1, "Excellent"), (1.5, "High"), (3.0, "Medium")), "Low")
DIVERSITY = Scale(((0.9, "High"), (0.6, "Medium")), "Low", at_least=True)
SPEED = Scale(((5.0, "Fast"), (100.0, "Slow")), "Very slow")
COST = Scale(((2.0, "Cheap"), (5.0, "Moderate")), "Expensive")
CV_LIMIT = 0.25  # coefficient of variation of the quality metric over seeds
OSCILLATION_LIMIT = 0.25  # late-training loss oscillation
GOOD_QUALITY = ("Excellent", "High")  # "at good quality" in the bottom line
TIE_SE = 2.0  # a pick ties a column whose mean is within this many standard errors of the difference
FLAT_GAIN = 0.1  # relative change of a quality curve that counts as flattened (or as past its best)
LIKELIHOOD_WORDS = {"exact": "Exact", "bound": "Approx (bound)", "quadrature": "Approx (quadrature)",
                    "estimate": "Approx (estimate)", "none": "None"}
NFE_FRACTION = 0.9  # the sampling-speed row names the NFE where quality reaches this share of the best
NOT_SETUP = (  # config keys that cannot change what a run measures: runs differing only there are pooled
    "seed", "ckpt_path", "paths", "logger", "callbacks", "extras", "tags", "task_name", "hydra",
    "optimized_metric", "resume_sweep",
    "eval.seed", "eval.device", "eval.cache_dir", "eval.feature_net_dir", "eval.val_likelihood",
    "trainer.enable_progress_bar", "trainer.default_root_dir", "dataset.root", "dataset.download",
    "dataset.num_workers")
CONFIG_ERROR = "ConfigError"  # a failed run whose error starts with this never started training
# The founding comparison's families (its column name -> genbench's family), as commonly taught; the
# matrix's columns come in this order, the other families after them by name.
FOUNDING_FAMILIES = {"VAE": "vae", "GAN": "gan", "Flow": "flow", "AR": "autoregressive",
                     "Diffusion": "diffusion"}


@dataclass(frozen=True)
class Rule:
    topic: str
    text: str  # may name {scale}, rendered with the scale's variable

    scale: Scale | None = None
    var: str = "r"

    def prose(self) -> str:
        return f"- {self.topic}: " + self.text.format(scale=self.scale.prose(self.var) if self.scale else "")


RULES = (
    Rule("Cells", "mean ± std over the seeds of a column; a cell measured on fewer runs than its column "
                  "holds says n=k, and a single run shows its value with n=1 and no spread."),
    Rule("Columns", "one per family and config: runs are pooled only when their configs (the record's "
                    f"provenance.config, less {', '.join(NOT_SETUP)}) agree; a family run under several "
                    "configs gets a column per config, named by what differs, and a warning. A record of "
                    "eval.py (train=false) counts the steps its checkpoint trained as its trainer.max_steps "
                    "(its own trainer's budget trained nothing). Order: the "
                    f"founding comparison's families ({', '.join(FOUNDING_FAMILIES.values())}), then the "
                    "others by name."),
    Rule("Reference", "held-out real data (real_<metric> in every record: fresh draws on 2D sets, a split "
                      "the reference does not use on images), scored by the same code against the same "
                      "reference at the same sample size: the best value samples can reach there. Each "
                      "run is compared with its own record's value. Where the split holds fewer images "
                      "than the run's samples, the run's samples scored on that many are compared "
                      "(at_real_n_<metric>, named in the cell); a record without them is left out."),
    Rule("Sample quality", "images: fid_inception when measured, else fd_<dataset>_cnn (lower is better); "
                           "2D sets: precision_data_space (higher is better). r = how many times worse "
                           "than held-out real data (value / real, or real / value when higher is better), "
                           "per run, averaged over the column's runs: {scale}. Where no record of the "
                           "dataset holds a real-data value, r is to the best family instead, and the row "
                           "says so; else a run without one is left out, and a column of only such runs "
                           "reads n/a.", QUALITY),
    Rule("Diversity", "mode_coverage on Gaussian mixtures (PacGAN's rule), else recall_data_space (2D) or "
                      "recall_<x> (images, the quality row's extractor); s = value / real data's value, "
                      "per run, averaged over the column's runs (the value itself where no record holds "
                      "a real-data value): {scale}; \"Low (mode collapse)\" when mode coverage is the "
                      "metric.", DIVERSITY, "s"),
    Rule("Training stability", f"Unstable when a run diverged or crashed in training, the quality metric's "
                               f"coefficient of variation over seeds exceeds {CV_LIMIT}, or the loss "
                               f"oscillation exceeds {OSCILLATION_LIMIT} (population std of train/loss over "
                               "the last quarter of logged steps / its range over the run; runs with fewer "
                               "than 8 logged losses have none); else Stable. A run that "
                               f"failed on its config ({CONFIG_ERROR}) never trained: it is a config error, "
                               "not instability; nor is a failure in setup (the data, a checkpoint), in "
                               "evaluation, of the machine (memory or disk exhausted, an I/O error, a killed "
                               "data loader process while training) or of a dead worker (the record's "
                               "provenance.failed_in; a record without it counts as a crash in training). "
                               "With one finished run the "
                               "spread over seeds is unknown: the word is n=1 unless the run diverged or "
                               "oscillated."),
    Rule("Likelihood", "mean test bits/dim, with its Monte Carlo standard error (nll_bpd_se) and the median "
                       "per-example bits/dim (nll_bpd_median: a mean far above it is decided by a few test "
                       "points); the word is the kind: "
                       + ", ".join(f"{k} -> {v}" for k, v in LIKELIHOOD_WORDS.items()) + "."),
    Rule("Sampling speed", "ms per sample (batch of eval.speed_batch_size) and NFE; where a checkpoint has "
                           "a quality-against-NFE curve (scripts/nfe_sweep.py), the fewest NFE at which some "
                           f"sampler reaches {NFE_FRACTION:.0%} of the curve's best quality; r = ratio to "
                           "the fastest column: {scale}.", SPEED),
    Rule("Training compute", "training FLOPs (train_flops: FlopCounterMode on one training step, per "
                             "example, times the examples seen; train_seconds where no record of the "
                             "dataset has FLOPs; where some have them, a column without reads n/a), "
                             "with examples, wall-clock and parameters; r = ratio to the cheapest column: "
                             "{scale}.", COST),
    Rule("Latent space, Conditioning", "from the interface's capability flags (not measurements): Yes / "
                                       "Implicit / No, with what the latent is and how labels enter; on "
                                       "labelled images a conditional model's cell adds "
                                       "conditional_accuracy_<x>."),
    Rule("Quality against compute", "curves.csv of every run (energy_distance_test on 2D sets, "
                                    "fd_<dataset>_cnn on images, at log-spaced steps; lower is better), "
                                    "averaged over seeds step by step. Best = the best point of the mean "
                                    "curve; the common level is the median of the columns' best values, "
                                    "or held-out real data's value where that is higher, and each column's "
                                    "compute to reach it is the FLOPs of the first point of its mean curve "
                                    "at or below it. At the end of the budget a curve is "
                                    f"Past its best when it ended more than {FLAT_GAIN:.0%} worse than its "
                                    "best point, Flattened when its last half-decade of compute improved it "
                                    f"by less than {FLAT_GAIN:.0%}, else Still improving; for both, a value "
                                    "below held-out real data's counts as real data's (at the curve's "
                                    "sample size the metric cannot tell them apart)."),
    Rule("Bottom line", "quality is compared by r (the shown values of runs whose floors had different "
                        "sizes cannot be); best quality: the lowest r; fastest sampling at good quality: the "
                        f"fastest column whose quality word is {' or '.join(GOOD_QUALITY)}; exact "
                        "likelihood: the lowest nll_bpd of kind exact; latent space and conditioning: the "
                        "best quality among columns with the capability; most stable at good quality: the "
                        "lowest CV of quality among Stable columns whose quality word is "
                        f"{' or '.join(GOOD_QUALITY)}; an exact tie goes to the first column in the table's "
                        "order. A pick is \"tied with\" each other candidate whose per-run numbers (r, "
                        "ms/sample, nll_bpd) have a mean within "
                        f"{TIE_SE:g} standard errors of the difference (Welch's, over the seeds) of the "
                        "pick's: the seeds cannot tell them apart; the most stable pick ties a CV within "
                        f"{TIE_SE:g} standard errors of the difference (a CV's of n normal runs: "
                        "CV sqrt((1 + 2 CV^2) / 2(n - 1)), the delta method's); a "
                        "column with one run is not tested. "
                        "Pareto front: the columns no other column matches or beats on both "
                        "sampling time and r while beating on one; to beat is to be better by more than "
                        "that tie (with one run, better at all), to match is to be as good or tied."),
    Rule("Founding comparison", "each cell of the founding table against the measured word of the same "
                                "row and family: agrees when they are the same word (Approx (ELBO) counts "
                                "as Approx (bound); Easy or Moderate conditioning as Yes, the ease is not "
                                "measured), not measured when the matrix has no word for it."),
)


def rules_text() -> str:
    """The prose of every rule, one Markdown list item each."""
    return "\n".join(rule.prose() for rule in RULES)
