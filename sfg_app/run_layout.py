"""The names of the files and folders of a run folder (`[SYSTEM] model_dir`).

Every name a command reads or writes in a run folder is spelled here and nowhere else
(`tests/cli/test_run_folder.py` greps `sfg_app/` and `scripts/` for them), so that the
commands, the engine, the config's defaults and the experiment scripts cannot drift apart
on where a file is (`io/run_folder.py`'s `RunFolder` gives the paths):

    <model_dir>/                      RunFolder
      settings.yaml                   .settings         resolved settings of the last start
      settings_history/               .settings_history earlier settings.yaml, dated
      network.yaml                    .network          the trained network's identity
      sfg_train.lock                  .lock             held while sfg_train runs
      dataset_split.csv               .split            [SYSTEM] dataset_split_file default
      histogram_ref.yaml              .histogram_ref    [NETWORK] histogram_ref_file default
      cache/<phase>/                  .cache()          preprocessed volumes ([NETWORK] cache = disk)
      checkpoints/                    .checkpoints      (engine/checkpoints.py inside)
      logs/<phase>/                   .tensorboard()    TensorBoard events: train, validation
      sfg_<command>.log               .command_log()    each command's console
      grouping_history.csv            .grouping_history grouping per log step (training)
      grouping/                       .grouping         sfg_groups and end of training:
        grouping.yaml, grouping.png   .grouping_yaml, .grouping_png
        grouping_history.png          .grouping_history_png
      inference/                      .inference()      [INFERENCE] save_seg_dir default
      evaluation/                     .evaluation()     [EVALUATION] save_csv_dir default
        metrics.csv, summary.txt      .metrics(), .metrics_summary()
      export/                         .export           sfg_export default:
        <task>.keras, <task>_savedmodel/  .exported_keras(), .exported_savedmodel()

Why a module of its own: the config states the defaults of paths under model_dir
(`dataset_split_file`, `histogram_ref_file`, `save_seg_dir`, `save_csv_dir`) and `io/run_folder.py` reads and
writes them; config and io are one rank and do not import each other, so the names sit
below both.
"""


class RunLayout:
    """The names in a run folder; `RunFolder` turns them into paths."""

    SETTINGS = "settings.yaml"
    SETTINGS_HISTORY = "settings_history"
    NETWORK = "network.yaml"
    LOCK = "sfg_train.lock"
    SPLIT = "dataset_split.csv"
    HISTOGRAM_REF = "histogram_ref.yaml"
    CACHE = "cache"
    CHECKPOINTS = "checkpoints"
    TENSORBOARD = "logs"
    LOG_SUFFIX = ".log"
    GROUPING_HISTORY = "grouping_history.csv"
    GROUPING = "grouping"
    GROUPING_YAML = "grouping.yaml"
    GROUPING_PNG = "grouping.png"
    GROUPING_HISTORY_PNG = "grouping_history.png"
    INFERENCE = "inference"
    EVALUATION = "evaluation"
    METRICS = "metrics.csv"
    METRICS_SUMMARY = "summary.txt"
    EXPORT = "export"
    KERAS_SUFFIX = ".keras"
    SAVEDMODEL_SUFFIX = "_savedmodel"
