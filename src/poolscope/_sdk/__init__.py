"""``poolscope.configure()``: the only code that needs the OpenTelemetry SDK and
exporters (providers, views, export health).

May import the entry points (``_api``), the paths it configures and the
leaves; nothing below it imports this package.
"""
