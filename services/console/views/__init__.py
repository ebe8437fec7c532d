"""The console's pages, one module per role or area; `services.console.pages` gathers their routers."""
