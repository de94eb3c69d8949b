"""Every `seqsentry` command, one module per group; `stream.cli` registers them all.

    tools.py        synth, replay, record, broker, topics (logs and the broker)
    train.py        train, evaluate (the offline trainer, training/)
    service.py      run, faust, score, demo, alerts (the detector and its demo)
    loop.py         feedback, verdict, compare, promote (the analyst loop)
    demo.py         what `seqsentry demo` does: broker, starter model, detector, attacks, live alerts
    log_options.py  the options that describe a recorded log, shared by every command reading one
    options.py      the Kafka connection options and the help formatter every group shares

The commands are the top floor: they may import any package below (``stream``, ``stream.runtime``,
``training``); nothing below imports them. Heavy imports (torch, pyarrow, pydantic) happen
inside the command functions, so `seqsentry --help` and a settings error stay fast.
"""
