"""``poolscope.configure()`` and the tests' recorder: the only code that needs the
OpenTelemetry SDK and exporters (providers, views, export health, in-memory spans).

May import the entry points (``_api``), the paths it configures and the
leaves; nothing below it imports this package.
"""
