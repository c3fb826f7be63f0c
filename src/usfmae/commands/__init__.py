"""One module per CLI verb: ``add_arguments(parser)`` and ``run(args) -> int | None``.

Command modules parse and print; the work lives in the library modules they call.
"""
