"""Cloud: the server catalog, servers, and Cloud's allowance and charges."""
