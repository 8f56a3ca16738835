"""The student's side: fine-tune the student on a strategy's dataset (TRL), evaluate it through the
engine protocol, and compare strategies with bootstrap intervals (the paper's Table 2).

    settings.py   the `train:` and `eval:` config sections
    train.py      `train_student`: SFTTrainer, LoRA or full, resumable, train.json
    evaluate.py   `evaluate`: accuracy, reference log-likelihood, judge score, two-order win rate
    stats.py      bootstrap intervals, paired differences
    compare.py    equal-count subsampling and the Table-2-shaped table
"""
