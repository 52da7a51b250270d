"""The annotation loop: served clips worth a label → a re-annotation queue → a new stage.

:mod:`.queue_format` is the on-disk contract of a queue folder (read it before writing a
consumer); :mod:`.rules` picks the clips; :mod:`.queue` builds a queue from the prediction log.
"""
