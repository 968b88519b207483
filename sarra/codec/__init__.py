"""Wire codecs: the only code that parses or writes message strings.

:mod:`sarra.codec.v02` is the entry point (``decode``, ``to_wire``, ``make_notice``,
``derive``, ``make_report``, ``report_to_wire``, ``encode``); :mod:`~sarra.codec.timestamps`
and :mod:`~sarra.codec.paths` hold the shared grammar; :mod:`~sarra.codec.v03` reads and
writes sr3's JSON messages (``encode(..., post_format="v03")``).
"""
