"""The language: text -> syntax tree -> located data -> checked Spec. No torch here.

parse (grammar/train.lark, syntax, parse) -> locate (document, values) ->
check (schema, overrides, rules; catalog, expr, diagnostics). fmt and diff work on
the syntax tree and the located data. lark is imported only when text is parsed.
"""
