"""Label Studio as the annotation tool: push the re-annotation queue, pull the next stage.

``emotions queue push`` turns a queue folder (``videos/`` + ``queue.csv``, written by
``emotions queue``) into a Label Studio project's tasks, the videos served from where they lie
through Label Studio's local-files storage. ``emotions queue pull`` exports the finished tasks
and writes their votes as the next annotation stage of a corpus in the ``emotions`` layout, so
ingest aggregates them with the earlier stages (the later stage decides).

Label Studio is its own server in its own virtual environment (``make annotate``); this
package only speaks its REST API over HTTP, so none of its pins reach ours.
"""
