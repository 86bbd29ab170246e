"""What a user reads: terminal tables, the HTML report, figures, and Perfetto export."""
