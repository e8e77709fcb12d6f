"""Browser tests of the pharmacist workbench (playwright driving Debian's Chromium) and their helpers."""
