"""Market data: the in-memory types (base) and the sources that produce them (csv_source,
synthetic, alpaca, fred). Import the module you need: importing this package stays cheap."""
