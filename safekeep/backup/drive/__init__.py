"""What OneDrive and SharePoint document libraries share: a drive backed up by delta into
the catalog (``collect``), restored through uploads (``restore``), exported as files
(``export``), described for search and downloaded (``model``)."""
