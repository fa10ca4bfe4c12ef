"""Triggers that start flows without a person: webhook signatures and requests, cron schedules."""
