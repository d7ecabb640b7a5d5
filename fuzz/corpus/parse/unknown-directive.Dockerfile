# unknowndirective=value
# syntax=value
FROM ImageName
# directive=value
