# build: pack the tree (this job's own copy, without .git) into an artifact and print its digest.
rm -rf .git
mkdir -p /tmp/dist
tar -czf /tmp/dist/project.tar.gz .
sha256sum /tmp/dist/project.tar.gz
