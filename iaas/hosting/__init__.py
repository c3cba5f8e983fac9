"""Hosting: the hosting catalog, subscriptions, and Hosting's allowance and charges."""
