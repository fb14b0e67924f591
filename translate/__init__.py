"""translate: LSTM neural machine translation (train, translate, benchmark).

Importing the package changes nothing outside it: the process-wide tuning the command-line
entry points apply (environment variables, allocator settings) lives in
:mod:`translate.tuning`, for library users to opt in to with
``translate.tuning.apply_process_tuning()``.
"""
