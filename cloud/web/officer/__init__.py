"""The credit officer console (/officer): the application queue, the application page with its decision
form, maker-checker overrides, appeal reviews, the PDF case file, and the portfolio."""
