"""The pure core: decisions as plain functions of state, time and readings.

``maintenance`` (holds → the maint file's content), ``schedule`` (windows and job times,
timezone and DST), ``disklevels`` (a reading → a disk level, with debounce and hysteresis),
``units`` (durations, sizes, times of day parsed into numbers).

May import: the standard library and ``watcher.core`` only. No I/O, no clock of its own
(time is an argument), no event loop. Tested with tables of inputs.
"""
