from seg2med._entry import main

main()
